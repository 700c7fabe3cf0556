// Command go-api serves a small JSON API.
package main

import (
	"encoding/json"
	"log"
	"net/http"
)

func newMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"status": "ok"})
	})
	return mux
}

func main() {
	log.Println("listening on :8081")
	log.Fatal(http.ListenAndServe(":8081", newMux()))
}
