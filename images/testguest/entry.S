/*
 * kvirt test guest entry points.
 *
 * _start (ELF e_entry): the Linux 64-bit boot protocol, as a VMM enters vmlinux: long mode, paging
 * identity-maps at least the first 1 GiB, flat GDT, interrupts off, RSI = physical address of the
 * boot_params ("zero page"). We only set our own stack.
 *
 * pvh_start (XEN_ELFNOTE_PHYS32_ENTRY note): the PVH direct boot ABI: 32-bit protected mode, paging off,
 * EBX = physical address of the hvm_start_info. We build identity paging for 1 GiB (static tables, no
 * loop) and switch to long mode. This lets QEMU (-kernel with a PVH ELF) boot the test guest too.
 */
	.file	"entry.S"
	.section .text.entry, "ax"
	.globl _start
	.code64
_start:
	cli
	leaq	stack_top(%rip), %rsp
	xorl	%ebp, %ebp
	movq	%rsi, %rdi		/* linux_main(boot_params) */
	call	linux_main
1:	cli
	hlt
	jmp	1b

	.code32
	.globl pvh_start
pvh_start:
	cli
	movl	%ebx, %esi		/* keep hvm_start_info */
	lgdt	gdt_desc
	movl	%cr4, %eax
	orl	$0x20, %eax		/* PAE */
	movl	%eax, %cr4
	movl	$pml4, %eax
	movl	%eax, %cr3
	movl	$0xc0000080, %ecx	/* EFER */
	rdmsr
	orl	$0x100, %eax		/* LME */
	wrmsr
	movl	%cr0, %eax
	orl	$0x80000001, %eax	/* PG | PE */
	movl	%eax, %cr0
	ljmp	$0x08, $pvh_64

	.code64
pvh_64:
	movl	$0x10, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	movl	%eax, %fs
	movl	%eax, %gs
	leaq	stack_top(%rip), %rsp
	xorl	%ebp, %ebp
	movl	%esi, %edi		/* pvh_main(hvm_start_info) */
	call	pvh_main
2:	cli
	hlt
	jmp	2b

	.section .rodata.gdt, "a"
	.balign	8
gdt:
	.quad	0			/* null */
	.quad	0x00af9a000000ffff	/* 0x08: 64-bit code */
	.quad	0x00cf92000000ffff	/* 0x10: data */
gdt_end:
gdt_desc:
	.word	gdt_end - gdt - 1
	.long	gdt

	/* Identity map of the first 1 GiB with 2 MiB pages, built by the assembler. */
	.section .data.pagetables, "aw"
	.balign	4096
pml4:
	.quad	pdpt + 0x3
	.fill	511, 8, 0
pdpt:
	.quad	pd + 0x3
	.fill	511, 8, 0
pd:
	.set	i, 0
	.rept	512
	.quad	(i << 21) | 0x83	/* present, writable, 2 MiB page */
	.set	i, i + 1
	.endr

	.section .bss.stack, "aw", @nobits
	.balign	16
	.space	16384
stack_top:

	/* PVH entry point note (Xen ELF note type 18, XEN_ELFNOTE_PHYS32_ENTRY). */
	.section .note.Xen, "a", @note
	.balign	4
	.long	4			/* name size */
	.long	8			/* desc size */
	.long	18			/* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz	"Xen"
	.balign	4
	.quad	pvh_start

	.section .note.GNU-stack, "", @progbits
