package auth

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/fluxbase/fluxbase/api"
	domain "github.com/fluxbase/fluxbase/auth"
)

// apiVersionHeader carries the error format's version both ways: a
// request naming 2024-01-01 or later gets {code: "<error_code>"}, as
// auth-js reads it when the response names the version too; an older or
// absent one gets GoTrue's legacy {code: <status>, error_code, msg}.
const (
	apiVersionHeader = "X-Supabase-Api-Version"
	apiVersion       = "2024-01-01"
)

// status is the HTTP status GoTrue answers each code with.
var status = map[domain.ErrorCode]int{
	domain.CodeValidationFailed:      http.StatusBadRequest,
	domain.CodeEmailAddressInvalid:   http.StatusBadRequest,
	domain.CodeBadJSON:               http.StatusBadRequest,
	domain.CodeInvalidCredentials:    http.StatusBadRequest,
	domain.CodeEmailNotConfirmed:     http.StatusBadRequest,
	domain.CodeUserBanned:            http.StatusBadRequest,
	domain.CodeSessionExpired:        http.StatusBadRequest,
	domain.CodeRefreshNotFound:       http.StatusBadRequest,
	domain.CodeRefreshAlreadyUsed:    http.StatusBadRequest,
	domain.CodeSessionNotFound:       http.StatusBadRequest,
	domain.CodeWeakPassword:          http.StatusUnprocessableEntity,
	domain.CodeSamePassword:          http.StatusUnprocessableEntity,
	domain.CodeUserAlreadyExists:     http.StatusUnprocessableEntity,
	domain.CodeEmailExists:           http.StatusUnprocessableEntity,
	domain.CodeSignupDisabled:        http.StatusUnprocessableEntity,
	domain.CodeAnonymousDisabled:     http.StatusUnprocessableEntity,
	domain.CodeProviderDisabled:      http.StatusUnprocessableEntity,
	domain.CodePhoneProviderMissing:  http.StatusUnprocessableEntity,
	domain.CodeUserNotFound:          http.StatusNotFound,
	domain.CodeMFAFactorNotFound:     http.StatusNotFound,
	domain.CodeOTPExpired:            http.StatusForbidden,
	domain.CodeFlowStateNotFound:     http.StatusNotFound,
	domain.CodeFlowStateExpired:      http.StatusBadRequest,
	domain.CodeBadCodeVerifier:       http.StatusBadRequest,
	domain.CodeOTPDisabled:           http.StatusUnprocessableEntity,
	domain.CodeMFAChallengeExpired:   http.StatusUnprocessableEntity,
	domain.CodeMFAVerificationFailed: http.StatusUnprocessableEntity,
	domain.CodeMFAFactorNameConflict: http.StatusUnprocessableEntity,
	domain.CodeInsufficientAAL:       http.StatusForbidden,
	domain.CodeOverEmailRateLimit:    http.StatusTooManyRequests,
	domain.CodeOverRequestRateLimit:  http.StatusTooManyRequests,
	domain.CodeNoAuthorization:       http.StatusUnauthorized,
	domain.CodeBadJWT:                http.StatusForbidden,
	domain.CodeNotAdmin:              http.StatusForbidden,
	domain.CodeRequestTimeout:        http.StatusGatewayTimeout,
	domain.CodeUnexpectedFailure:     http.StatusInternalServerError,
}

// httpError is a GoTrue error with its status.
type httpError struct {
	status int
	code   domain.ErrorCode
	msg    string
	// reasons say why a password is weak.
	reasons []string
}

func newError(st int, code domain.ErrorCode, msg string) *httpError {
	return &httpError{status: st, code: code, msg: msg}
}

var (
	errTooLarge      = newError(http.StatusRequestEntityTooLarge, domain.CodeValidationFailed, "Request body is too large")
	errUnexpected    = newError(http.StatusInternalServerError, domain.CodeUnexpectedFailure, "Unexpected failure, please check server logs for more information")
	errTimeout       = newError(http.StatusGatewayTimeout, domain.CodeRequestTimeout, "Processing this request timed out, please retry after a moment.")
	errBadPagination = newError(http.StatusBadRequest, domain.CodeValidationFailed, "Bad Pagination Parameters")
)

func badJSON(detail string) *httpError {
	return newError(http.StatusBadRequest, domain.CodeBadJSON, "Could not parse request body as JSON: "+detail)
}

func validation(msg string) *httpError {
	return newError(http.StatusBadRequest, domain.CodeValidationFailed, msg)
}

// writeError renders e in the shape the request's API version asks for.
func writeError(w http.ResponseWriter, r *http.Request, e *httpError) {
	body := map[string]any{"msg": e.msg, "message": e.msg, "error_code": e.code}
	if modernClient(r) {
		w.Header().Set(apiVersionHeader, apiVersion)
		body["code"] = e.code
	} else {
		body["code"] = e.status
	}
	if e.code == domain.CodeWeakPassword {
		reasons := e.reasons
		if reasons == nil {
			reasons = []string{}
		}
		body["weak_password"] = map[string]any{"reasons": reasons}
	}
	api.WriteJSON(w, e.status, body)
}

// modernRequest stands for a request naming the current API version,
// for the errors rendered without the request at hand.
var modernRequest = &http.Request{Header: http.Header{apiVersionHeader: {apiVersion}}}

// modernClient reports whether the request names an API version of
// 2024-01-01 or later (dates in ISO form compare as strings).
func modernClient(r *http.Request) bool {
	v := strings.TrimSpace(r.Header.Get(apiVersionHeader))
	return len(v) == len(apiVersion) && v >= apiVersion
}

// domainError maps the domain's refusals (and its failures) to GoTrue's.
func (h *handlers) domainError(w http.ResponseWriter, r *http.Request, err error) {
	if e, ok := domain.AsError(err); ok {
		st, known := status[e.Code]
		if !known {
			st = http.StatusBadRequest
		}
		if e.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds()))))
		}
		writeError(w, r, &httpError{status: st, code: e.Code, msg: e.Message, reasons: e.Reasons})
		return
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		writeError(w, r, errTimeout)
		return
	}
	h.log.Error("auth request failed", errField(err), reqField(r))
	writeError(w, r, errUnexpected)
}

// guardError renders the edge guard's refusals as GoTrue answers them,
// in the current shape (auth-js sends the version with every request).
func guardError(w http.ResponseWriter, e *api.Error) {
	r := modernRequest
	code := domain.CodeBadJWT
	st := e.Status
	switch e {
	case api.ErrNoAPIKey:
		code = domain.CodeNoAuthorization
	case api.ErrForbidden:
		code = domain.CodeNotAdmin
		msg := "User not allowed"
		writeError(w, r, newError(st, code, msg))
		return
	case api.ErrRevokedToken:
		// The session is gone, as GoTrue says once a session's row is
		// deleted; auth-js then drops its copy.
		writeError(w, r, newError(http.StatusForbidden, domain.CodeSessionNotFound, "Session from session_id claim in JWT does not exist"))
		return
	case api.ErrNeedUser:
		st = http.StatusForbidden
		writeError(w, r, newError(st, code, "invalid claim: missing sub claim"))
		return
	case api.ErrNotFound:
		writeError(w, r, newError(st, "not_found", "Not found"))
		return
	case api.ErrMethodNotAllow:
		writeError(w, r, newError(st, "method_not_allowed", "Method not allowed"))
		return
	case api.ErrInternal:
		writeError(w, r, errUnexpected)
		return
	}
	writeError(w, r, newError(st, code, e.Message))
}

// decode reads a JSON object body of at most maxBody bytes into v. An
// empty body is an empty object; unknown keys are ignored.
func decode(w http.ResponseWriter, r *http.Request, v any) *httpError {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	dec := json.NewDecoder(r.Body)
	err := dec.Decode(v)
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return errTooLarge
	case errors.Is(err, io.EOF):
		return nil
	case err != nil:
		return badJSON(err.Error())
	}
	if dec.More() {
		return badJSON("more than one JSON value")
	}
	return nil
}

// maxBody bounds a request body: auth bodies are small.
const maxBody = 64 << 10

// decodeInto decodes the body into v, answering the error itself when it
// cannot; it reports whether the handler goes on.
func decodeInto(w http.ResponseWriter, r *http.Request, v any) bool {
	if e := decode(w, r, v); e != nil {
		writeError(w, r, e)
		return false
	}
	return true
}
