package bootcmd

import (
	"fmt"
	"math/big"
	"strconv"
	"strings"
)

// suffixes of Kubernetes quantities with their multipliers (binary SI, then decimal SI).
var suffixes = []struct {
	s    string
	mult *big.Rat
}{
	{"Ki", pow(2, 10)}, {"Mi", pow(2, 20)}, {"Gi", pow(2, 30)}, {"Ti", pow(2, 40)}, {"Pi", pow(2, 50)}, {"Ei", pow(2, 60)},
	{"n", new(big.Rat).SetFrac64(1, 1e9)}, {"u", new(big.Rat).SetFrac64(1, 1e6)}, {"m", new(big.Rat).SetFrac64(1, 1e3)},
	{"k", pow(10, 3)}, {"M", pow(10, 6)}, {"G", pow(10, 9)}, {"T", pow(10, 12)}, {"P", pow(10, 15)}, {"E", pow(10, 18)},
}

func pow(base, exp int64) *big.Rat {
	return new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(base), big.NewInt(exp), nil))
}

// ParseMemory parses a memory size written as a Kubernetes quantity (128Mi, 1Gi, 1.5G, 268435456, 1e9) into
// bytes, rounded up as resource.Quantity.Value does. It accepts what resource.ParseQuantity accepts for
// positive sizes, without importing the Kubernetes packages (their initialisation would slow every boot).
func ParseMemory(s string) (uint64, error) {
	bad := fmt.Errorf("%q: want a positive quantity like 256Mi", s)
	num, mult := s, big.NewRat(1, 1)
	for _, x := range suffixes {
		if strings.HasSuffix(s, x.s) {
			num, mult = strings.TrimSuffix(s, x.s), x.mult
			break
		}
	}
	// The number: [+-]digits[.digits] or [+-].digits, then an optional decimal exponent (e3, E-2).
	mant, exp := num, ""
	if i := strings.IndexAny(num, "eE"); i >= 0 {
		if mult.Cmp(big.NewRat(1, 1)) != 0 {
			return 0, bad // an exponent and a suffix
		}
		mant, exp = num[:i], num[i+1:]
		if !validInt(strings.TrimPrefix(strings.TrimPrefix(exp, "+"), "-")) {
			return 0, bad
		}
	}
	digits := strings.TrimPrefix(strings.TrimPrefix(mant, "+"), "-")
	whole, frac, _ := strings.Cut(digits, ".")
	if (whole == "" && frac == "") || (whole != "" && !validInt(whole)) || (frac != "" && !validInt(frac)) {
		return 0, bad
	}
	v, ok := new(big.Rat).SetString(strings.TrimSuffix(mant, "."))
	if !ok {
		return 0, bad
	}
	if exp != "" {
		e, err := strconv.ParseInt(exp, 10, 64)
		if err != nil || e > 30 || e < -30 {
			return 0, bad
		}
		if e >= 0 {
			v.Mul(v, pow(10, e))
		} else {
			v.Quo(v, pow(10, -e))
		}
	}
	v.Mul(v, mult)
	if v.Sign() <= 0 {
		return 0, bad
	}
	// Round up to whole bytes.
	q, r := new(big.Int).QuoRem(v.Num(), v.Denom(), new(big.Int))
	if r.Sign() != 0 {
		q.Add(q, big.NewInt(1))
	}
	if !q.IsUint64() || q.Uint64() > 1<<62 {
		return 0, fmt.Errorf("%q: too large", s)
	}
	return q.Uint64(), nil
}

func validInt(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
