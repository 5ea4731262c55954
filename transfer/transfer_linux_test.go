package transfer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	transferv1 "github.com/migratehq/migrate/api/transfer/v1"
)

func testID(t *testing.T) string {
	return fmt.Sprintf("%s-%d", strings.NewReplacer("/", "-", "#", "-").Replace(t.Name()), os.Getpid())
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	size := 256 << 20
	if testing.Short() {
		size = 16 << 20
	}
	src := t.TempDir()
	names := checkpointDir(t, src, size)
	total := totalSize(t, src, names)
	r := &Receiver{Root: t.TempDir()}
	p := startPeer(t, r, true)
	id := testID(t)

	var calls, last atomic.Int64
	st, err := Send(t.Context(), p.conn, id, src, names, SendOptions{Progress: func(pr Progress) {
		calls.Add(1)
		if pr.TotalBytes != total || pr.RawBytes < last.Load() {
			t.Errorf("progress %+v after %d", pr, last.Load())
		}
		last.Store(pr.RawBytes)
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v: %.0f MiB/s raw, ratio %.2f", st, float64(st.RawBytes)/st.Duration.Seconds()/(1<<20), float64(st.RawBytes)/float64(st.WireBytes))
	if st.RawBytes != total || st.Written != total || st.Resumed != 0 || last.Load() != total || calls.Load() != st.Chunks {
		t.Fatalf("stats %+v, progress %d in %d calls, want %d bytes", st, last.Load(), calls.Load(), total)
	}
	if st.WireBytes >= st.RawBytes*3/4 {
		t.Errorf("wire bytes %d for %d raw: compression did not work", st.WireBytes, st.RawBytes)
	}
	if r.WrittenBytes() != total {
		t.Errorf("receiver wrote %d, want %d", r.WrittenBytes(), total)
	}
	if ok, err := r.Complete(id); !ok || err != nil {
		t.Fatalf("Complete = %v, %v", ok, err)
	}
	sameFiles(t, src, r.Dir(id), names)
	sums, err := r.Verified(id)
	if err != nil || len(sums) != len(names) {
		t.Fatalf("Verified = %d digests, %v; want %d", len(sums), err, len(names))
	}
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(src, n))
		if err != nil {
			t.Fatal(err)
		}
		if want := sha256.Sum256(b); sums[n] != hex.EncodeToString(want[:]) {
			t.Errorf("Verified[%s] = %s, want the file's SHA-256", n, sums[n])
		}
	}
	fi, err := os.Stat(filepath.Join(r.Dir(id), "pages-1.img"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("pages file: %v, %v", fi, err)
	}

	// Sending a complete transfer again moves nothing.
	st, err = Send(t.Context(), p.conn, id, src, names, SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.RawBytes != 0 || st.Resumed != total {
		t.Fatalf("second send %+v, want everything resumed", st)
	}

	// The same id with other content is refused, and the complete files stay.
	if err := os.WriteFile(filepath.Join(src, "manifest.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Send(t.Context(), p.conn, id, src, names, SendOptions{}); !errors.Is(err, ErrHeaderMismatch) {
		t.Fatalf("changed files: %v, want ErrHeaderMismatch", err)
	}
	if ok, _ := r.Complete(id); !ok {
		t.Fatal("complete transfer lost")
	}
	if err := r.Remove(id); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(r.Root, id)); !os.IsNotExist(err) {
		t.Fatalf("after Remove: %v", err)
	}
}

// cancelHalfway sends with a Progress that cancels once half the bytes went.
func cancelHalfway(t *testing.T, p *peer, id, src string, names []string, total int64) Stats {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var cancelledAt atomic.Pointer[time.Time]
	st, err := Send(ctx, p.conn, id, src, names, SendOptions{Progress: func(pr Progress) {
		if pr.RawBytes >= total/2 && cancelledAt.Load() == nil {
			now := time.Now()
			cancelledAt.Store(&now)
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled send: %v (%+v), want context.Canceled", err, st)
	}
	if at := cancelledAt.Load(); at == nil || time.Since(*at) > 2*time.Second {
		t.Fatalf("send returned %v after cancel", time.Since(*at))
	}
	if st.RawBytes >= total {
		t.Fatalf("cancelled send sent everything: %+v", st)
	}
	return st
}

func TestResumeAfterCancel(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	names := checkpointDir(t, src, 64<<20)
	total := totalSize(t, src, names)
	r := &Receiver{Root: t.TempDir()}
	p := startPeer(t, r, true)
	id := testID(t)

	first := cancelHalfway(t, p, id, src, names, total)
	if _, err := r.Verified(id); !errors.Is(err, ErrIncomplete) {
		t.Errorf("Verified of a partial transfer: %v, want ErrIncomplete", err)
	}
	if ok, _ := r.Complete(id); ok {
		t.Fatal("cancelled transfer marked complete")
	}
	st, err := Send(t.Context(), p.conn, id, src, names, SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	written1 := r.WrittenBytes() - st.Written
	t.Logf("first %+v; receiver kept %d; second %+v", first, written1, st)
	if st.Resumed == 0 || st.Resumed+st.RawBytes != total || st.Written != st.RawBytes {
		t.Fatalf("resumed send %+v, total %d", st, total)
	}
	// Everything the receiver wrote before the cancel was journaled and not sent again.
	if st.Resumed != written1 || written1 > first.RawBytes {
		t.Fatalf("receiver wrote %d in the first send (sender sent %d), second send resumed %d", written1, first.RawBytes, st.Resumed)
	}
	sameFiles(t, src, r.Dir(id), names)
}

// TestReceiverRestart resumes a transfer in a new Receiver on the same
// directory, with and without fsyncs (NoSync: a process restart keeps what
// the page cache holds).
func TestReceiverRestart(t *testing.T) {
	t.Parallel()
	for _, noSync := range []bool{false, true} {
		name := "fsync"
		if noSync {
			name = "nosync"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			src := t.TempDir()
			names := checkpointDir(t, src, 48<<20)
			total := totalSize(t, src, names)
			root := t.TempDir()
			id := testID(t)

			p1 := startPeer(t, &Receiver{Root: root, NoSync: noSync}, true)
			cancelHalfway(t, p1, id, src, names, total)
			p1.stop() // the agent goes away; its Receiver with it

			r2 := &Receiver{Root: root, NoSync: noSync}
			p2 := startPeer(t, r2, true)
			st, err := Send(t.Context(), p2.conn, id, src, names, SendOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if st.Resumed == 0 || st.RawBytes+st.Resumed != total || r2.WrittenBytes() != st.RawBytes {
				t.Fatalf("after restart: %+v, new receiver wrote %d, total %d", st, r2.WrittenBytes(), total)
			}
			sameFiles(t, src, r2.Dir(id), names)
			if _, err := r2.Verified(id); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestCutStream(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	names := checkpointDir(t, src, 48<<20)
	total := totalSize(t, src, names)
	root := t.TempDir()
	id := testID(t)

	// The server is stopped abruptly mid-stream, as a crash or network cut.
	p1 := startPeer(t, &Receiver{Root: root}, true)
	var once atomic.Bool
	cutStart := time.Now()
	_, err := Send(t.Context(), p1.conn, id, src, names, SendOptions{Progress: func(pr Progress) {
		if pr.RawBytes >= total/3 && once.CompareAndSwap(false, true) {
			go p1.srv.Stop()
		}
	}})
	if err == nil {
		t.Fatal("send over a stopped server succeeded")
	}
	t.Logf("cut after %v: %v", time.Since(cutStart), err)
	p2 := startPeer(t, &Receiver{Root: root}, true)
	st, err := Send(t.Context(), p2.conn, id, src, names, SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("resumed: %+v", st)
	if st.Resumed == 0 || st.RawBytes+st.Resumed != total {
		t.Fatalf("after cut: %+v", st)
	}
	sameFiles(t, src, p2.r.Dir(id), names)
}

func TestTamperedChunk(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	names := checkpointDir(t, src, 8<<20)
	r := &Receiver{Root: t.TempDir()}
	p := startPeer(t, r, true)
	id := testID(t)
	const badOff = 3 * DefaultChunkSize

	_, err := Send(t.Context(), p.conn, id, src, names, SendOptions{corrupt: func(name string, off int64, raw []byte) {
		if name == "pages-1.img" && off == badOff {
			raw[100] ^= 0x40
		}
	}})
	var ce *ChunkError
	if !errors.Is(err, ErrChunkChecksum) || !errors.As(err, &ce) || ce.File != "pages-1.img" || ce.Offset != badOff {
		t.Fatalf("tampered chunk: %v, want ChunkError for pages-1.img at %d", err, badOff)
	}
	if !strings.Contains(err.Error(), `"pages-1.img"`) || !strings.Contains(err.Error(), fmt.Sprint(badOff)) {
		t.Errorf("error %q does not name file and offset", err)
	}
	t.Log(err)

	// The receiver journaled nothing for that chunk, so a clean resend fixes it.
	h := headerFor(t, r, id)
	done := newChunkSet(h)
	j, err := openJournal(filepath.Join(r.Root, id, "journal"), done, false)
	if err != nil {
		t.Fatal(err)
	}
	j.close()
	fi := fileIndex(t, h, "pages-1.img")
	if done.has(fi, badOff/DefaultChunkSize) {
		t.Fatal("tampered chunk is journaled as complete")
	}
	st, err := Send(t.Context(), p.conn, id, src, names, SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.RawBytes < DefaultChunkSize {
		t.Fatalf("resend %+v did not include the tampered chunk", st)
	}
	sameFiles(t, src, r.Dir(id), names)
}

func headerFor(t *testing.T, r *Receiver, id string) *transferv1.Header {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(r.Root, id, "header"))
	if err != nil {
		t.Fatal(err)
	}
	var h transferv1.Header
	if err := proto.Unmarshal(data, &h); err != nil {
		t.Fatal(err)
	}
	return &h
}

func fileIndex(t *testing.T, h *transferv1.Header, name string) uint32 {
	for i, f := range h.GetFiles() {
		if f.GetName() == name {
			return uint32(i)
		}
	}
	t.Fatalf("%s not in header", name)
	return 0
}

func TestDigestMismatch(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	names := checkpointDir(t, src, 4<<20)
	r := &Receiver{Root: t.TempDir()}
	p := startPeer(t, r, false)
	id := testID(t)
	// A wrong digest, as a stale manifest would give.
	wrong := map[string]string{"mm-1.img": strings.Repeat("ab", 32)}
	_, err := Send(t.Context(), p.conn, id, src, names, SendOptions{SHA256: wrong})
	var fe *FileError
	if !errors.Is(err, ErrDigestMismatch) || !errors.As(err, &fe) || fe.File != "mm-1.img" {
		t.Fatalf("wrong digest: %v, want FileError for mm-1.img", err)
	}
	if ok, _ := r.Complete(id); ok {
		t.Fatal("transfer with a bad file marked complete")
	}
	// The bad file's chunks were forgotten: the same Send sends only it again.
	st, err := Send(t.Context(), p.conn, id, src, names, SendOptions{SHA256: wrong})
	if !errors.Is(err, ErrDigestMismatch) || st.RawBytes != 12345 {
		t.Fatalf("repeat: %v, %+v, want only mm-1.img (12345 bytes) resent", err, st)
	}
	// With the right digests the header differs: the partial transfer restarts.
	st, err = Send(t.Context(), p.conn, id, src, names, SendOptions{})
	if err != nil || st.Resumed != 0 {
		t.Fatalf("corrected: %v, %+v", err, st)
	}
	sameFiles(t, src, r.Dir(id), names)
}

// rawSend opens a stream and sends msgs, returning the stream's final error.
func rawSend(t *testing.T, p *peer, msgs ...*transferv1.SendRequest) error {
	t.Helper()
	stream, err := transferv1.NewTransferClient(p.conn).Send(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			break
		}
	}
	stream.CloseSend()
	for {
		if _, err := stream.Recv(); err != nil {
			return err
		}
	}
}

func header(id string, names ...string) *transferv1.SendRequest {
	h := &transferv1.Header{TransferId: id, ChunkSize: DefaultChunkSize}
	for _, n := range names {
		h.Files = append(h.Files, &transferv1.File{Name: n, Size: 10, Sha256: make([]byte, 32)})
	}
	return &transferv1.SendRequest{Msg: &transferv1.SendRequest_Header{Header: h}}
}

func TestHostileHeader(t *testing.T) {
	t.Parallel()
	outside := t.TempDir()
	r := &Receiver{Root: t.TempDir()}
	p := startPeer(t, r, true)

	for _, c := range []struct {
		id    string
		names []string
		want  error
	}{
		{"abs", []string{"/etc/passwd"}, ErrBadName},
		{"dotdot", []string{"../x"}, ErrBadName},
		{"inner-dotdot", []string{"a/../../x"}, ErrBadName},
		{"deep-dotdot", []string{"a/b/../../../" + outside + "/x"}, ErrBadName},
		{"dot", []string{"./x"}, ErrBadName},
		{"empty-elem", []string{"a//b"}, ErrBadName},
		{"trailing-slash", []string{"a/"}, ErrBadName},
		{"empty", []string{""}, ErrBadName},
		{"nul", []string{"a\x00b"}, ErrBadName},
		{"dup", []string{"a", "a"}, ErrBadName},
		{"file-and-dir", []string{"a", "a/b"}, ErrBadName},
		{"../escape", []string{"x"}, ErrBadTransferID},
		{".", []string{"x"}, ErrBadTransferID},
		{"a/b", []string{"x"}, ErrBadTransferID},
	} {
		err := fromStatus(rawSend(t, p, header(c.id, c.names...)))
		if status.Code(rawSend(t, p, header(c.id, c.names...))) != codes.InvalidArgument || !errors.Is(err, c.want) {
			t.Errorf("%s %q: %v, want %v", c.id, c.names, err, c.want)
		}
		// The sender refuses them too, before connecting.
		if _, err := Send(t.Context(), p.conn, c.id, outside, c.names, SendOptions{}); !errors.Is(err, c.want) {
			t.Errorf("Send %s %q: %v, want %v", c.id, c.names, err, c.want)
		}
	}
	if d := r.Dir("../escape"); d != "" {
		t.Errorf("Dir of a bad id = %q", d)
	}
	ents, _ := os.ReadDir(r.Root)
	if len(ents) != 0 {
		t.Errorf("refused headers left %v in the root", ents)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("files appeared outside: %v", ents)
	}

	// A chunk for a file not in the header, or at an offset outside it, is refused.
	for _, c := range []*transferv1.Chunk{
		{File: 1, Offset: 0, RawLength: 10},
		{File: 0, Offset: DefaultChunkSize, RawLength: 10},
		{File: 0, Offset: 5, RawLength: 5},
		{File: 0, Offset: 0, RawLength: 11},
	} {
		err := fromStatus(rawSend(t, p, header("chunks", "a"), &transferv1.SendRequest{Msg: &transferv1.SendRequest_Chunk{Chunk: c}}))
		if !errors.Is(err, ErrProtocol) {
			t.Errorf("chunk %v: %v, want ErrProtocol", c, err)
		}
	}
}

func TestSymlinkInFilesDir(t *testing.T) {
	t.Parallel()
	src, outside := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "x.img"), []byte("payload"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(src, "d"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "d", "y.img"), []byte("payload"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &Receiver{Root: t.TempDir()}
	p := startPeer(t, r, true)
	for i, name := range []string{"x.img", "d/y.img"} {
		// An entry planted in the receiver's directory must not redirect writes.
		id := fmt.Sprintf("%s-%d", testID(t), i)
		files := r.Dir(id)
		if err := os.MkdirAll(files, 0o700); err != nil {
			t.Fatal(err)
		}
		link := strings.Split(name, "/")[0]
		if err := os.Symlink(filepath.Join(outside, link), filepath.Join(files, link)); err != nil {
			t.Fatal(err)
		}
		_, err := Send(t.Context(), p.conn, id, src, []string{name}, SendOptions{})
		if err == nil {
			t.Errorf("send of %s through a planted symlink succeeded", name)
		}
		t.Log(err)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("wrote outside the root: %v", ents)
	}
}

func TestBusy(t *testing.T) {
	t.Parallel()
	r := &Receiver{Root: t.TempDir()}
	p := startPeer(t, r, false)
	id := testID(t)
	// Hold a stream open after its header, then try a second one.
	stream, err := transferv1.NewTransferClient(p.conn).Send(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(header(id, "a")); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	if err := fromStatus(rawSend(t, p, header(id, "a"))); !errors.Is(err, ErrBusy) {
		t.Fatalf("second stream: %v, want ErrBusy", err)
	}
	if err := r.Remove(id); !errors.Is(err, ErrBusy) {
		t.Fatalf("Remove while receiving: %v, want ErrBusy", err)
	}
	stream.CloseSend()
	if _, err := stream.Recv(); !errors.Is(fromStatus(err), ErrIncomplete) {
		t.Fatalf("stream closed before commit: %v, want ErrIncomplete", err)
	}
}
