package auth

import (
	"errors"
	"fmt"
	"time"
)

// ErrorCode is one of GoTrue's error codes; the HTTP surface maps each to
// its status and clients switch on it.
type ErrorCode string

// The codes the domain returns, as GoTrue names them.
const (
	CodeValidationFailed     ErrorCode = "validation_failed"
	CodeWeakPassword         ErrorCode = "weak_password"
	CodeSamePassword         ErrorCode = "same_password"
	CodeUserAlreadyExists    ErrorCode = "user_already_exists"
	CodeEmailExists          ErrorCode = "email_exists"
	CodeSignupDisabled       ErrorCode = "signup_disabled"
	CodeAnonymousDisabled    ErrorCode = "anonymous_provider_disabled"
	CodeInvalidCredentials   ErrorCode = "invalid_credentials"
	CodeEmailNotConfirmed    ErrorCode = "email_not_confirmed"
	CodeUserBanned           ErrorCode = "user_banned"
	CodeUserNotFound         ErrorCode = "user_not_found"
	CodeSessionNotFound      ErrorCode = "session_not_found"
	CodeSessionExpired       ErrorCode = "session_expired"
	CodeRefreshNotFound      ErrorCode = "refresh_token_not_found"
	CodeRefreshAlreadyUsed   ErrorCode = "refresh_token_already_used"
	CodeEmailAddressInvalid  ErrorCode = "email_address_invalid"
	CodeRequestTimeout       ErrorCode = "request_timeout"
	CodeUnexpectedFailure    ErrorCode = "unexpected_failure"
	CodeBadJSON              ErrorCode = "bad_json"
	CodeNoAuthorization      ErrorCode = "no_authorization"
	CodeBadJWT               ErrorCode = "bad_jwt"
	CodeNotAdmin             ErrorCode = "not_admin"
	CodeProviderDisabled     ErrorCode = "email_provider_disabled"
	CodePhoneProviderMissing ErrorCode = "phone_provider_disabled"
	CodeOverRequestRateLimit ErrorCode = "over_request_rate_limit"
	CodeOverEmailRateLimit   ErrorCode = "over_email_send_rate_limit"
)

// Error is a refusal the caller may see: a GoTrue code, a message, and
// for weak passwords the reasons.
type Error struct {
	Code    ErrorCode
	Message string
	// Reasons say why a password is weak ("length", "characters", ...).
	Reasons []string
	// RetryAfter, for a rate limit, is when to try again.
	RetryAfter time.Duration
}

func (e *Error) Error() string { return e.Message }

func fail(code ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// AsError returns err's *Error, if it is one.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

var errInvalidCredentials = &Error{Code: CodeInvalidCredentials, Message: "Invalid login credentials"}
