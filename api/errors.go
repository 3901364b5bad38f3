package api

import (
	"encoding/json"
	"net/http"
)

// Error is an API error as clients see it, in PostgREST's shape, {code,
// message, details, hint}, which the edge and every surface share so a
// client needs one error decoder. A surface may put its official
// client's own codes in it (REST answers PostgREST's and SQLSTATEs).
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

// The catalogue of the edge's own errors, also used by the surfaces.
// Codes are stable: clients may switch on them. Fluxbase's codes are FB
// and three digits that are no HTTP status: FB00x credentials, FB01x
// routing, FB02x the requests of a surface, FB09x server faults. The
// table of every code is docs/ERRORS.md.
var (
	ErrNoAPIKey       = &Error{Status: http.StatusUnauthorized, Code: "FB001", Message: "No API key found in request", Hint: "pass the anon or service key in the apikey header or an Authorization: Bearer token"}
	ErrInvalidToken   = &Error{Status: http.StatusUnauthorized, Code: "FB002", Message: "Invalid API key or token"}
	ErrExpiredToken   = &Error{Status: http.StatusUnauthorized, Code: "FB003", Message: "JWT expired"}
	ErrForbidden      = &Error{Status: http.StatusForbidden, Code: "FB004", Message: "This operation needs the service key"}
	ErrNeedUser       = &Error{Status: http.StatusForbidden, Code: "FB005", Message: "This operation needs a signed-in user's token", Hint: "send the user's access token as Authorization: Bearer"}
	ErrRevokedToken   = &Error{Status: http.StatusUnauthorized, Code: "FB006", Message: "JWT has been revoked", Hint: "its session has ended: sign in again"}
	ErrNotFound       = &Error{Status: http.StatusNotFound, Code: "FB010", Message: "Not found"}
	ErrMethodNotAllow = &Error{Status: http.StatusMethodNotAllowed, Code: "FB011", Message: "Method not allowed"}
	ErrBodyTimeout    = &Error{Status: http.StatusRequestTimeout, Code: "FB012", Message: "The request body did not arrive in time"}
	ErrInternal       = &Error{Status: http.StatusInternalServerError, Code: "FB090", Message: "Internal server error"}
	ErrUnavailable    = &Error{Status: http.StatusServiceUnavailable, Code: "FB091", Message: "Service unavailable"}
)

// WriteError renders e; every error response of the edge and its
// surfaces goes through here.
func WriteError(w http.ResponseWriter, e *Error) {
	WriteJSON(w, e.Status, e)
}

// WriteJSON answers status with v as JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
