package main

import "encoding/json"

// search is POST /v1/search with q in the body (never in the URL).
func (c client) search(q string, out any) int {
	c.t.Helper()
	body, err := json.Marshal(map[string]any{"q": q})
	if err != nil {
		c.t.Fatal(err)
	}
	return c.do("POST", "/v1/search", "application/json", body, out)
}
