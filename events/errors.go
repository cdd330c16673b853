package events

import (
	"errors"
	"fmt"
)

// permanentError marks a failure that no retry can fix (poison): the bus
// acknowledges the message and copies it, with the reason, to the dead-letter
// topic.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return "permanent: " + e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent wraps err so that IsPermanent reports true. Nil stays nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	var p *permanentError
	if errors.As(err, &p) {
		return err
	}
	return &permanentError{err: err}
}

// Permanentf is fmt.Errorf followed by Permanent.
func Permanentf(format string, args ...any) error {
	return Permanent(fmt.Errorf(format, args...))
}

// IsPermanent reports whether err (or anything it wraps) is permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// ErrDropped is returned (wrapped) by handlers that deliberately acknowledge an
// event without doing anything, e.g. an event for a tombstoned user. The bus
// treats it as success; it exists so middleware can log and count the drop.
var ErrDropped = errors.New("event dropped")
