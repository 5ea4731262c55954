package shim

import (
	"context"
	"encoding/json"
	"os"

	"github.com/migratehq/migrate/agent/checkpoint"
	"github.com/migratehq/migrate/agent/network"
	"github.com/migratehq/migrate/criu"
	"github.com/migratehq/migrate/runtime/spec"
)

// stdio is a container's stdio: pipes whose read ends the shim copies to
// the log. Stdin is a pipe whose write end is closed at once: EOF, as
// /dev/null would give, but an object CRIU can dump (a host /dev/null is a
// file outside the container's mounts) and a restore can replace.
type stdio struct {
	inR, outR, outW, errR, errW *os.File
}

func newStdio() (*stdio, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	inW.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		inR.Close()
		outR.Close()
		outW.Close()
		return nil, err
	}
	return &stdio{inR: inR, outR: outR, outW: outW, errR: errR, errW: errW}, nil
}

func (s *stdio) close() {
	for _, f := range []*os.File{s.inR, s.outR, s.outW, s.errR, s.errW} {
		f.Close()
	}
}

// kit is what a standby shim makes before it knows its container, so that a
// restore finds it ready: the stdio pipes, a fresh network namespace with its
// loopback up (what a loopback-only checkpoint is restored into), and CRIU's
// swrk already holding both (its exec and start are 20-40 ms of a move's
// downtime otherwise). Any part may be missing; the shim then makes it.
type kit struct {
	stdio    *stdio
	netns    *os.File
	criu     *criu.Prepared
	criuPath string // the binary criu runs
}

// makeKit makes what it can; criuPath "" starts no CRIU.
func makeKit(criuPath string) *kit {
	warmManifestDecoder()
	k := &kit{criuPath: criuPath}
	var err error
	if k.stdio, err = newStdio(); err != nil {
		return k
	}
	if k.netns, err = network.NewLoopback(true); err != nil {
		k.netns = nil
	}
	if criuPath == "" {
		return k
	}
	files := []*os.File{k.stdio.inR, k.stdio.outW, k.stdio.errW}
	if k.netns != nil {
		files = append(files, k.netns)
	}
	if p, err := (&criu.Client{Path: criuPath}).Prepare(context.Background(), files...); err == nil {
		k.criu = p
	}
	return k
}

// takeStdio hands over the pipes (made now if the kit has none).
func (k *kit) takeStdio() (*stdio, error) {
	if k != nil && k.stdio != nil {
		s := k.stdio
		k.stdio = nil
		return s, nil
	}
	return newStdio()
}

// close releases what was not taken.
func (k *kit) close() {
	if k == nil {
		return
	}
	if k.criu != nil {
		k.criu.Close()
		k.criu = nil
	}
	if k.netns != nil {
		k.netns.Close()
		k.netns = nil
	}
	if k.stdio != nil {
		k.stdio.close()
		k.stdio = nil
	}
}

// warmManifestDecoder decodes a checkpoint manifest once: encoding/json
// builds its decoders for the spec's many types on first use (~4 ms idle,
// twice that on a busy node), which would be a restore's otherwise.
func warmManifestDecoder() {
	b, err := json.Marshal(&checkpoint.Manifest{FormatVersion: checkpoint.FormatVersion, Spec: spec.Example()})
	if err == nil {
		var m checkpoint.Manifest
		_ = json.Unmarshal(b, &m)
	}
}
