package criu

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
)

func TestDumpOptsConversion(t *testing.T) {
	o := DumpOptions{
		ImagesDir: "/img", Pid: 42, LeaveRunning: true, TCPEstablished: true, FileLocks: true,
		CgroupMode: CgroupModeSoft, NetworkLock: NetworkLockNFTables, ParentImg: "../pre",
		External:   []string{"pipe:[1234]"},
		ExtMounts:  map[string]string{"/z": "zk", "/a": "ak"},
		PageServer: &PageServer{Address: "127.0.0.1", Port: 1234},
	}
	r, err := o.rpcOpts(7, -1, "dump.log")
	if err != nil {
		t.Fatal(err)
	}
	if r.GetImagesDirFd() != 7 || r.WorkDirFd != nil || r.GetPid() != 42 || !r.GetLeaveRunning() ||
		!r.GetTcpEstablished() || !r.GetFileLocks() || r.ShellJob != nil || r.GetParentImg() != "../pre" {
		t.Errorf("basic fields wrong: %+v", r)
	}
	if r.GetManageCgroupsMode() != rpc.CriuCgMode_SOFT || r.GetNetworkLock() != rpc.CriuNetworkLockMethod_NFTABLES {
		t.Errorf("modes: %v %v", r.GetManageCgroupsMode(), r.GetNetworkLock())
	}
	if got := fmt.Sprint(r.GetExternal()); got != "[pipe:[1234] mnt[/a]:ak mnt[/z]:zk]" {
		t.Errorf("external = %s", got)
	}
	if r.GetLogFile() != "dump.log" || r.GetLogLevel() != DefaultLogLevel {
		t.Errorf("log %q level %d", r.GetLogFile(), r.GetLogLevel())
	}
	if r.GetPs().GetAddress() != "127.0.0.1" || r.GetPs().GetPort() != 1234 {
		t.Errorf("ps = %+v", r.GetPs())
	}
	// The required images_dir_fd must survive marshalling.
	b, err := (&rpc.CriuReq{Type: rpc.CriuReqType_DUMP.Enum(), Opts: r}).MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	var back rpc.CriuReq
	if err := back.UnmarshalVT(b); err != nil || back.GetOpts().GetImagesDirFd() != 7 || back.GetOpts().GetPid() != 42 {
		t.Fatalf("round trip: %v %+v", err, back.GetOpts())
	}
}

func TestDumpOptsRejects(t *testing.T) {
	for name, o := range map[string]DumpOptions{
		"no pid":       {ImagesDir: "/i"},
		"negative pid": {ImagesDir: "/i", Pid: -1},
		"no images":    {Pid: 1},
		"log subdir":   {ImagesDir: "/i", Pid: 1, LogFile: "../x.log"},
		"net lock":     {ImagesDir: "/i", Pid: 1, NetworkLock: "pf"},
		"cgroup mode":  {ImagesDir: "/i", Pid: 1, CgroupMode: "hard"},
		"log level":    {ImagesDir: "/i", Pid: 1, LogLevel: 9},
		"ps port":      {ImagesDir: "/i", Pid: 1, PageServer: &PageServer{Port: 70000}},
	} {
		if _, err := o.rpcOpts(3, -1, "dump.log"); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestRestoreOptsConversion(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	o := RestoreOptions{
		ImagesDir: "/img", RstSibling: true, ShellJob: true, Root: "/rootfs",
		InheritFds:  []InheritFd{{Key: "pipe:[1]", File: r}, {Key: "pipe:[2]", File: w}},
		CgroupRoots: map[string]string{"": "/all", "memory": "/mem"},
	}
	ro, err := o.rpcOpts(5, 6, []int{4, 5})
	if err != nil {
		t.Fatal(err)
	}
	if !ro.GetRstSibling() || !ro.GetShellJob() || ro.GetRoot() != "/rootfs" || ro.GetWorkDirFd() != 6 || ro.GetLogFile() != "restore.log" {
		t.Errorf("fields: %+v", ro)
	}
	var fds []string
	for _, f := range ro.GetInheritFd() {
		fds = append(fds, fmt.Sprintf("%s=%d", f.GetKey(), f.GetFd()))
	}
	if got := strings.Join(fds, ","); got != "pipe:[1]=4,pipe:[2]=5" {
		t.Errorf("inherit fds %s", got)
	}
	var cg []string
	for _, c := range ro.GetCgRoot() {
		cg = append(cg, fmt.Sprintf("%q:%s", c.GetCtrl(), c.GetPath()))
		if c.GetCtrl() == "" && c.Ctrl != nil {
			t.Error("empty controller sent instead of omitted")
		}
	}
	if got := strings.Join(cg, ","); got != `"":/all,"memory":/mem` {
		t.Errorf("cgroup roots %s", got)
	}
	if _, err := (&RestoreOptions{ImagesDir: "/i", InheritFds: []InheritFd{{Key: "x"}}}).rpcOpts(3, -1, []int{4}); err == nil {
		t.Error("inherit fd without file accepted")
	}
}

type recordingNotify struct {
	NoNotify
	calls []string
}

func (r *recordingNotify) PostRestore(pid int32) error {
	r.calls = append(r.calls, fmt.Sprintf("post-restore %d", pid))
	return nil
}

func (r *recordingNotify) PreDump() error {
	r.calls = append(r.calls, "pre-dump")
	return fmt.Errorf("refused")
}

func (r *recordingNotify) QueryExternalFiles() ([]string, error) {
	return []string{"file[1:2]"}, nil
}

func TestDispatchNotify(t *testing.T) {
	n := &recordingNotify{}
	if _, err := dispatchNotify(n, "post-restore", 77, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := dispatchNotify(n, "pre-dump", 0, nil); err == nil {
		t.Error("pre-dump error lost")
	}
	if _, err := dispatchNotify(n, "some-future-script", 0, nil); err != nil {
		t.Errorf("unknown script: %v", err)
	}
	ext, err := dispatchNotify(n, "query-ext-files", 0, nil)
	if err != nil || fmt.Sprint(ext) != "[file[1:2]]" {
		t.Errorf("query-ext-files: %v %v", ext, err)
	}
	if fmt.Sprint(n.calls) != "[post-restore 77 pre-dump]" {
		t.Errorf("calls %v", n.calls)
	}
	// A passed fd is closed when nobody takes it.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := dispatchNotify(NoNotify{}, "orphan-pts-master", 0, r); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Stat(); err == nil {
		t.Error("orphan pts fd left open")
	}
}
