package agent

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/migratehq/migrate/pagestore"
)

// TestStoreErrCodes: page-store errors reach the API with the codes
// migratectl turns into its exit codes, with the store's message kept.
func TestStoreErrCodes(t *testing.T) {
	corrupt := &pagestore.CorruptError{Snapshot: "s1", File: "images/pages-1.img", Chunk: "ab", Reason: "hash mismatch"}
	for _, c := range []struct {
		err  error
		code codes.Code
	}{
		{fmt.Errorf("get s1: %w", pagestore.ErrNotFound), codes.NotFound},
		{fmt.Errorf("put s1: %w", pagestore.ErrExists), codes.AlreadyExists},
		{fmt.Errorf("get: %w", pagestore.ErrInvalidName), codes.InvalidArgument},
		{fmt.Errorf("get s1: %w", corrupt), codes.InvalidArgument},
		{fmt.Errorf("get s1: %w", pagestore.ErrBadManifest), codes.InvalidArgument},
	} {
		err := storeErr(c.err)
		if got := codeOf(err); got != c.code {
			t.Errorf("%v: code %v, want %v", c.err, got, c.code)
		}
		if err.Error() == "" || !strings.Contains(err.Error(), c.err.Error()) {
			t.Errorf("%v: message lost: %q", c.err, err)
		}
	}
	if storeErr(nil) != nil {
		t.Error("storeErr(nil) != nil")
	}
}
