// Package reply writes the edge's JSON answers, for the user API and the
// push receiver alike: one error shape, {"error":{"code","message"}}, with
// no internals and no user data.
package reply

import (
	"encoding/json"
	"net/http"
)

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// Error answers status with the error shape.
func Error(w http.ResponseWriter, status int, code, msg string) {
	var b errorBody
	b.Error.Code, b.Error.Message = code, msg
	JSON(w, status, b)
}

// JSON answers status with v as JSON, never sniffed as anything else.
func JSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
