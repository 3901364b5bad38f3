package storage

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"

	"go.uber.org/zap"

	"github.com/fluxbase/fluxbase/api"
	"github.com/fluxbase/fluxbase/storage"
)

// apiError is storage-api's error body. Like storage-api, the HTTP
// status of every client error is 400 and the real one is in
// statusCode; server faults are 500 and unsatisfiable ranges 416.
type apiError struct {
	http       int
	StatusCode string `json:"statusCode"`
	Code       string `json:"code"`
	Error      string `json:"error"`
	Message    string `json:"message"`
}

func newErr(status int, code, short, message string) apiError {
	h := http.StatusBadRequest
	if status >= 500 {
		h = status
	}
	return apiError{http: h, StatusCode: strconv.Itoa(status), Code: code, Error: short, Message: message}
}

var (
	errNoSuchBucket    = newErr(404, "NoSuchBucket", "Bucket not found", "Bucket not found")
	errNoSuchKey       = newErr(404, "NoSuchKey", "not_found", "Object not found")
	errKeyExists       = newErr(409, "KeyAlreadyExists", "Duplicate", "The resource already exists")
	errBucketExists    = newErr(409, "BucketAlreadyExists", "Duplicate", "The resource already exists")
	errAccessDenied    = newErr(403, "AccessDenied", "Unauthorized", "new row violates row-level security policy")
	errTooLarge        = newErr(413, "EntityTooLarge", "Payload too large", "The object exceeded the maximum allowed size")
	errMimeType        = newErr(415, "InvalidMimeType", "invalid_mime_type", "mime type not supported")
	errBucketNotEmpty  = newErr(409, "BucketNotEmpty", "InvalidRequest", "The bucket you tried to delete is not empty")
	errInvalidKey      = newErr(400, "InvalidKey", "InvalidKey", "Invalid key")
	errInvalidRequest  = newErr(400, "InvalidRequest", "InvalidRequest", "Invalid request")
	errInvalidJSON     = newErr(400, "InvalidRequest", "InvalidRequest", "The body is not valid JSON")
	errInvalidSig      = newErr(400, "InvalidSignature", "InvalidSignature", "The signature is invalid, expired or for another object")
	errIncompleteBody  = newErr(400, "InvalidRequest", "InvalidRequest", "The body ended before its declared length")
	errBodyTimeout     = newErr(408, "RequestTimeout", "Request Timeout", "The request body stopped arriving")
	errInternal        = newErr(500, "InternalError", "Internal Server Error", "Internal Server Error")
	errRangeNotSatisfy = apiError{http: http.StatusRequestedRangeNotSatisfiable, StatusCode: "416", Code: "InvalidRange", Error: "InvalidRange", Message: "The requested range is not satisfiable"}
)

func writeJSON(w http.ResponseWriter, status int, v any) { api.WriteJSON(w, status, v) }

func (e apiError) write(w http.ResponseWriter) {
	writeJSON(w, e.http, e)
}

// writeEdgeError renders the edge's errors (the guard's, 404, 405) in
// storage-api's shape, with their own codes and the status storage-api
// would send: 400, with the real one in statusCode.
func writeEdgeError(w http.ResponseWriter, e *api.Error) {
	newErr(e.Status, e.Code, http.StatusText(e.Status), e.Message).write(w)
}

// reply answers v, or err when it is not nil.
func (h *handler) reply(w http.ResponseWriter, r *http.Request, v any, err error) {
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// fail answers err, mapped from the storage domain's; what is not the
// client's fault is logged and answered 500.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	var e apiError
	switch {
	case errors.Is(err, storage.ErrNoSuchBucket):
		e = errNoSuchBucket
	case errors.Is(err, storage.ErrNoSuchKey), errors.Is(err, storage.ErrNotFound):
		e = errNoSuchKey
	case errors.Is(err, storage.ErrKeyExists):
		e = errKeyExists
	case errors.Is(err, storage.ErrBucketExists):
		e = errBucketExists
	case errors.Is(err, storage.ErrAccessDenied):
		e = errAccessDenied
	case errors.Is(err, storage.ErrTooLarge):
		e = errTooLarge
	case errors.Is(err, storage.ErrMimeType):
		e = errMimeType
	case errors.Is(err, storage.ErrBucketNotEmpty):
		e = errBucketNotEmpty
	case errors.Is(err, storage.ErrInvalidName), errors.Is(err, storage.ErrInvalidKey):
		e = errInvalidKey
	case errors.Is(err, storage.ErrInvalidSignature):
		e = errInvalidSig
	case errors.Is(err, errBadJSON):
		e = errInvalidJSON
	case errors.Is(err, storage.ErrInvalidRequest):
		e = errInvalidRequest
	case errors.Is(err, api.ErrBodyTimeout):
		e = errBodyTimeout
	case errors.Is(err, io.ErrUnexpectedEOF), isBodyError(err):
		e = errIncompleteBody
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		return // the client left; no one reads an answer
	default:
		h.log.Error("storage request failed", zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.Error(err))
		e = errInternal
	}
	e.write(w)
}

// isBodyError reports a failure reading the request's body: the client
// cut it off, or sent a malformed one.
func isBodyError(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe) || errors.Is(err, errBody)
}

// errBody marks a failure to read the request's body.
var errBody = errors.New("reading the request body")
