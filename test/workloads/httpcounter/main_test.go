package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
)

func TestCounterCounts(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(&counter{})
	t.Cleanup(srv.Close)
	for want := 1; want <= 3; want++ {
		resp, err := http.Get(srv.URL + "/any/path")
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got := string(b); got != strconv.Itoa(want)+"\n" {
			t.Fatalf("request %d answered %q", want, got)
		}
	}
}
