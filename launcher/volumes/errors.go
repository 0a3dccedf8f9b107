package volumes

import "fmt"

// FieldError is an error about one field of the VMI spec. Field is a path such as
// "spec.volumes[1].containerDisk.image"; Err says what is wrong and, where it can, what to do.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(field string, format string, args ...any) error {
	return &FieldError{Field: field, Err: fmt.Errorf(format, args...)}
}
