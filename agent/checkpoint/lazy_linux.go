package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/migratehq/migrate/criu"
	"github.com/migratehq/migrate/runtime/container"
)

// readyNotify tells lazyCheckpoint that the images are complete and CRIU's
// page server listens.
type readyNotify struct {
	criu.NoNotify
	ready chan struct{}
}

func (n *readyNotify) StatusReady() error {
	select {
	case <-n.ready:
	default:
		close(n.ready)
	}
	return nil
}

// lazyCheckpoint is Checkpoint's post-copy variant: the dump keeps running
// while its page server serves the memory, so the directory is completed and
// handed to o.Lazy.Ready between the two.
func (cp *Checkpointer) lazyCheckpoint(ctx context.Context, c *container.Container, dir, tmp string, m *Manifest, opts criu.DumpOptions, o Options) (_ *Manifest, retErr error) {
	id := c.ID()
	if st, err := c.State(); err != nil || st.Status != "paused" {
		return nil, fmt.Errorf("checkpoint %s: %w: a lazy-pages dump needs the container paused", id, ErrNotCheckable)
	}
	if o.Lazy.Port <= 0 || o.Lazy.Ready == nil {
		return nil, fmt.Errorf("checkpoint %s: lazy dump without port or ready function", id)
	}
	// CRIU keeps writing its log (and at the end its statistics) while it serves
	// pages: the log goes outside the checkpoint, whose files are hashed first.
	work := dir + ".lazy-work"
	if err := os.RemoveAll(work); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(work, 0o700); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	defer func() {
		if retErr == nil {
			os.RemoveAll(work)
		}
	}()
	opts.WorkDir = work
	opts.LazyPages = true
	opts.PageServer = &criu.PageServer{Address: "127.0.0.1", Port: o.Lazy.Port}

	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n := &readyNotify{ready: make(chan struct{})}
	dumped := make(chan error, 1)
	start := time.Now()
	go func() { dumped <- cp.CRIU.Dump(dctx, opts, n) }()
	// The rootfs diff needs only the frozen container, not CRIU: it runs while
	// CRIU dumps, off the downtime's critical path.
	diffed := make(chan error, 1)
	if o.Layer != nil {
		m.Rootfs.BaseDigest = o.Layer.BaseDigest
		m.Rootfs.Diff = "rootfs-diff.tar"
		go func() { diffed <- o.Layer.WriteDiff(filepath.Join(tmp, m.Rootfs.Diff)) }()
	} else {
		diffed <- nil
	}
	select {
	case <-n.ready:
	case err := <-dumped:
		<-diffed
		if err == nil {
			err = errors.New("criu ended the lazy dump without serving pages")
		}
		return nil, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	// From here on a failure must stop CRIU before returning.
	fail := func(err error) (*Manifest, error) {
		cancel()
		<-dumped
		return nil, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	if err := <-diffed; err != nil {
		return fail(fmt.Errorf("rootfs diff: %w", err))
	}
	m.Downtime = time.Since(start)
	m.LazyPages = true
	if o.Files != nil {
		if err := o.Files(func(dst, src string) error { return copyInto(tmp, dst, src) }); err != nil {
			return fail(fmt.Errorf("extra files: %w", err))
		}
	}
	var err error
	if m.Files, err = listFiles(tmp); err != nil {
		return fail(err)
	}
	if err := writeManifest(tmp, m, false); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fail(err)
	}
	if err := o.Lazy.Ready(m); err != nil {
		return fail(err)
	}
	if err := <-dumped; err != nil {
		return nil, fmt.Errorf("checkpoint %s: serving pages: %w", id, err)
	}
	return m, nil
}
