package criu

import (
	"fmt"
	"os"
	"testing"
	"time"
)

// childEnv makes the test binary run a workload program instead of the tests.
const childEnv = "MIGRATE_CRIU_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
		os.Exit(m.Run())
	case "counter":
		counterMain(os.Getenv("MIGRATE_CRIU_TEST_OUT"))
	default:
		os.Exit(2)
	}
}

// counterMain counts in memory and appends each value to out, and to stdout,
// forever. A restored counter continues from its last value; a fresh one
// starts at 1.
func counterMain(out string) {
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		os.Exit(3)
	}
	for n := 1; ; n++ {
		if _, err := fmt.Fprintf(f, "%d\n", n); err != nil {
			os.Exit(4)
		}
		fmt.Printf("%d\n", n)
		time.Sleep(20 * time.Millisecond)
	}
}
