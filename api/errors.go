package api

import (
	"encoding/json"
	"net/http"
)

// Error is an API error as clients see it. The REST surface uses PostgREST's
// shape, {code, message, details, hint}; the other surfaces share it so a
// client needs one error decoder.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Details any    `json:"details"`
	Hint    any    `json:"hint"`
}

func (e *Error) Error() string { return e.Message }

// With returns a copy of e carrying details.
func (e *Error) With(details any) *Error {
	c := *e
	c.Details = details
	return &c
}

// The catalogue. Codes are stable: clients may switch on them.
var (
	ErrNoAPIKey       = &Error{Status: http.StatusUnauthorized, Code: "FB401", Message: "No API key found in request", Hint: "pass the anon or service key in the apikey header or an Authorization: Bearer token"}
	ErrInvalidToken   = &Error{Status: http.StatusUnauthorized, Code: "FB402", Message: "Invalid API key or token"}
	ErrExpiredToken   = &Error{Status: http.StatusUnauthorized, Code: "FB403", Message: "JWT expired"}
	ErrForbidden      = &Error{Status: http.StatusForbidden, Code: "FB404", Message: "This operation needs the service key"}
	ErrNotFound       = &Error{Status: http.StatusNotFound, Code: "FB405", Message: "Not found"}
	ErrMethodNotAllow = &Error{Status: http.StatusMethodNotAllowed, Code: "FB406", Message: "Method not allowed"}
	ErrInternal       = &Error{Status: http.StatusInternalServerError, Code: "FB500", Message: "Internal server error"}
	ErrUnavailable    = &Error{Status: http.StatusServiceUnavailable, Code: "FB503", Message: "Service unavailable"}
)

// writeError renders e; every error response goes through here.
func writeError(w http.ResponseWriter, e *Error) {
	writeJSON(w, e.Status, e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
