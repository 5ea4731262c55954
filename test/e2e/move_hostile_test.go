package e2e

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/migratehq/migrate/agent/checkpoint"
	"github.com/migratehq/migrate/agent/pki"
	migratev1 "github.com/migratehq/migrate/api/migrate/v1"
	"github.com/migratehq/migrate/transfer"
)

// TestMoveToOtherCluster refuses a move to a node whose certificate is from another
// cluster before touching the container.
func TestMoveToOtherCluster(t *testing.T) {
	t.Parallel()
	p1, p3 := freePort(t), freePort(t)
	bootstrap := newAgent(t, agentConfig{node: "boot"})
	good := cluster(t, bootstrap, "n1", "n3")
	other := cluster(t, bootstrap, "n1", "n3")
	bootstrap.stop()
	n1 := newAgent(t, agentConfig{node: "n1", extra: fmt.Sprintf("tls:\n  dir: %s\npeer:\n  listen: 127.0.0.1:%d\npeers:\n  n3: 127.0.0.1:%d\n", good, p1, p3)})
	newAgent(t, agentConfig{node: "n3", extra: fmt.Sprintf("tls:\n  dir: %s\npeer:\n  listen: 127.0.0.1:%d\npeers:\n  n1: 127.0.0.1:%d\n", other, p3, p1)})
	id := containerID(t, "c")
	must(t, n1.ctl("run", "-b", counterWorkload(t), id), "run")
	before := n1.waitStatus(id, running)
	n1.waitCount(id, 3)

	wantFail(t, n1.ctl("move", id, "--to", "n3"), 6, "certificate signed by unknown authority")
	after := n1.waitStatus(id, running)
	if after.Pid != before.Pid {
		t.Errorf("pid %d became %d: a refused move touched the container", before.Pid, after.Pid)
	}
	nums := n1.waitCount(id, 0)
	nums = n1.waitCount(id, nums[len(nums)-1]+3)
	_, starts := n1.counterLog(id)
	checkContinuous(t, id, nums, starts)
	n1.noMoveLeftovers()
}

// roguePeer is a client of a node's peer API with a certificate of its cluster,
// sending whatever a test wants: a compromised or buggy source.
type roguePeer struct {
	conn *grpc.ClientConn
	peer migratev1.PeerClient
}

func newRoguePeer(t *testing.T, clusterDir, as, target, addr string) *roguePeer {
	t.Helper()
	tc, err := pki.ClientConfig(pki.Files{
		CA: filepath.Join(clusterDir, "ca.pem"), Cert: pki.CertFile(clusterDir, as), Key: pki.KeyFile(clusterDir, as),
	}, target)
	if err != nil {
		t.Fatal(err)
	}
	c, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &roguePeer{conn: c, peer: migratev1.NewPeerClient(c)}
}

// send transfers dir's files (a move's layout: checkpoint/...) as transfer id,
// claiming sums for the files named in it.
func (r *roguePeer) send(t *testing.T, id, dir string, sums map[string]string) error {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		files = append(files, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = transfer.Send(ctx, r.conn, id, dir, files, transfer.SendOptions{SHA256: sums})
	return err
}

func (r *roguePeer) restore(id, container string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := r.peer.RestoreMoved(ctx, &migratev1.RestoreMovedRequest{TransferId: id, ContainerId: container, From: "n1"})
	return err
}

func (r *roguePeer) abort(t *testing.T, id, container string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := r.peer.AbortMove(ctx, &migratev1.AbortMoveRequest{TransferId: id, ContainerId: container}); err != nil {
		t.Fatalf("abort move %s: %v", id, err)
	}
}

// copyDir copies the regular files of src into dst.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func fileSum(t *testing.T, p string) (int64, string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return int64(len(b)), hex.EncodeToString(s[:])
}

// rewriteManifest applies edit to the manifest in ckpt and writes it back.
func rewriteManifest(t *testing.T, ckpt string, edit func(*checkpoint.Manifest)) {
	t.Helper()
	p := filepath.Join(ckpt, checkpoint.ManifestName)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var m checkpoint.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	edit(&m)
	if b, err = json.Marshal(&m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestMoveHostileSource plays a source node that sends a target bad moves with a
// valid cluster certificate: a file whose bytes differ from its announced digest
// (a tampered stream), a checkpoint whose images do not match its manifest, and a
// rootfs diff with an entry escaping the root. The target refuses each with a
// clear error, restores nothing, writes nothing outside its directories and keeps
// nothing once the source aborts.
func TestMoveHostileSource(t *testing.T) {
	t.Parallel()
	p1, p2 := freePort(t), freePort(t)
	bootstrap := newAgent(t, agentConfig{node: "boot"})
	dir := cluster(t, bootstrap, "n1", "n2")
	bootstrap.stop()
	n1 := newAgent(t, agentConfig{node: "n1", extra: fmt.Sprintf("tls:\n  dir: %s\npeer:\n  listen: 127.0.0.1:%d\npeers:\n  n2: 127.0.0.1:%d\n", dir, p1, p2)})
	n2 := newAgent(t, agentConfig{node: "n2", extra: fmt.Sprintf("tls:\n  dir: %s\npeer:\n  listen: 127.0.0.1:%d\npeers:\n  n1: 127.0.0.1:%d\n", dir, p2, p1)})

	// A real checkpoint of a running container on n1, and its base on n2 (an
	// honest move brings it), so the hostile moves below differ in one thing each.
	id := containerID(t, "c")
	must(t, n1.ctl("run", "-b", counterWorkload(t), id), "run")
	n1.waitCount(id, 3)
	must(t, n1.ctl("move", id, "--to", "n2"), "honest move")
	n2.waitStatus(id, running)
	must(t, n2.ctl("checkpoint", id, "--leave-running", "--name", "real"), "checkpoint")
	must(t, n2.ctl("rm", "-f", id), "rm")
	real := filepath.Join(n2.data, "checkpoints", "real")
	var m checkpoint.Manifest
	b, err := os.ReadFile(filepath.Join(real, checkpoint.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m.Rootfs.Diff == "" {
		t.Fatalf("checkpoint has no rootfs diff: %+v", m.Rootfs)
	}
	pages := ""
	sums := map[string]string{}
	for _, f := range m.Files {
		sums["checkpoint/"+f.Path] = f.SHA256
		if strings.HasPrefix(filepath.Base(f.Path), "pages-") && f.Size > 0 {
			pages = f.Path
		}
	}
	if pages == "" {
		t.Fatalf("no pages image in %v", m.Files)
	}
	rogue := newRoguePeer(t, dir, "n1", "n2", fmt.Sprintf("127.0.0.1:%d", p2))
	// move prepares a move directory from the real checkpoint, lets edit change it
	// and returns it.
	move := func(edit func(ckpt string)) string {
		work := t.TempDir()
		copyDir(t, real, filepath.Join(work, "checkpoint"))
		edit(filepath.Join(work, "checkpoint"))
		return work
	}
	flip := func(p string) {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b := []byte{0}
		if _, err := f.ReadAt(b, 100); err != nil {
			t.Fatal(err)
		}
		b[0] ^= 0xff
		if _, err := f.WriteAt(b, 100); err != nil {
			t.Fatal(err)
		}
	}
	checkNothing := func(tid string) {
		t.Helper()
		if _, ok := n2.ps()[id]; ok {
			t.Errorf("n2 runs %s after a hostile move", id)
		}
		rogue.abort(t, tid, id)
		n2.noMoveLeftovers()
	}

	t.Run("tampered stream", func(t *testing.T) {
		// The pages file changed after its digest was announced: the receiver
		// catches it before the transfer counts as complete.
		work := move(func(ckpt string) { flip(filepath.Join(ckpt, pages)) })
		err := rogue.send(t, "move-tampered1", work, sums)
		if err == nil || !strings.Contains(err.Error(), "digest mismatch") || !strings.Contains(err.Error(), pages) {
			t.Fatalf("tampered transfer: %v; want a digest mismatch naming %s", err, pages)
		}
		err = rogue.restore("move-tampered1", id)
		if err == nil || !strings.Contains(err.Error(), "not complete") {
			t.Errorf("restore of a refused transfer: %v; want not complete", err)
		}
		checkNothing("move-tampered1")
	})

	t.Run("images not matching the manifest", func(t *testing.T) {
		// The stream is consistent (honest digests of changed bytes), but the
		// checkpoint's own manifest says otherwise.
		work := move(func(ckpt string) { flip(filepath.Join(ckpt, pages)) })
		if err := rogue.send(t, "move-tampered2", work, nil); err != nil {
			t.Fatalf("send: %v", err)
		}
		err := rogue.restore("move-tampered2", id)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "corrupt") || !strings.Contains(err.Error(), pages) {
			t.Fatalf("restore of a tampered checkpoint: %v; want corrupt naming %s", err, pages)
		}
		checkNothing("move-tampered2")
	})

	t.Run("rootfs diff escaping the root", func(t *testing.T) {
		victim := filepath.Join(t.TempDir(), "escaped")
		work := move(func(ckpt string) {
			p := filepath.Join(ckpt, m.Rootfs.Diff)
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			tw := tar.NewWriter(f)
			name := strings.Repeat("../", 32) + strings.TrimPrefix(victim, "/")
			body := []byte("escaped\n")
			if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
				t.Fatal(err)
			}
			if _, err := tw.Write(body); err != nil {
				t.Fatal(err)
			}
			if err := tw.Close(); err != nil {
				t.Fatal(err)
			}
			f.Close()
			size, sum := fileSum(t, p)
			rewriteManifest(t, ckpt, func(m *checkpoint.Manifest) {
				for i := range m.Files {
					if m.Files[i].Path == m.Rootfs.Diff {
						m.Files[i].Size, m.Files[i].SHA256 = size, sum
					}
				}
			})
		})
		if err := rogue.send(t, "move-escape", work, nil); err != nil {
			t.Fatalf("send: %v", err)
		}
		err := rogue.restore("move-escape", id)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "unsafe entry") {
			t.Fatalf("restore with an escaping diff entry: %v; want InvalidArgument, unsafe entry", err)
		}
		if _, err := os.Stat(victim); err == nil {
			t.Fatalf("%s was written outside the root", victim)
		}
		checkNothing("move-escape")
	})
}
