package registrar

import (
	"fmt"
	"time"
)

// IntervalTooBrief is Register's refusal of an expiry shorter than the
// policy's MinExpires: it carries the minimum, which the answer names
// (423 with Min-Expires, RFC 3261 10.3 step 7). It is ErrIntervalTooBrief
// to errors.Is.
type IntervalTooBrief struct {
	MinExpires time.Duration
}

func (e *IntervalTooBrief) Error() string {
	return fmt.Sprintf("%v: at least %v", ErrIntervalTooBrief, e.MinExpires)
}

func (e *IntervalTooBrief) Is(target error) bool { return target == ErrIntervalTooBrief }
