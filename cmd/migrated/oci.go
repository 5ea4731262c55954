package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/migratehq/migrate/runtime/container"
	"github.com/migratehq/migrate/runtime/spec"
)

type ociFlags struct {
	root      string
	log       string
	logFormat string
}

// newOCICommand builds the runc-compatible CLI: same verbs, flags and
// output formats, so tools written for runc (runtime-tools, containerd's
// runc shim conventions, people's scripts) can drive this runtime.
func newOCICommand() *cobra.Command {
	f := &ociFlags{}
	cmd := &cobra.Command{
		Use:   "oci",
		Short: "runc-compatible OCI runtime commands",
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Name() == "spec" {
				return nil
			}
			return requireRoot()
		},
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.root, "root", "/run/migrated/oci", "state directory")
	pf.StringVar(&f.log, "log", "", "also write errors to this file")
	pf.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	pf.Bool("debug", false, "accepted for runc compatibility")
	pf.Bool("systemd-cgroup", false, "accepted for runc compatibility (cgroupfs is used)")
	_ = pf.MarkHidden("debug")

	rt := func() (*container.Runtime, error) { return container.New(f.root) }
	wrap := func(run func(*cobra.Command, []string) error) func(*cobra.Command, []string) error {
		return func(c *cobra.Command, args []string) error {
			err := run(c, args)
			if err != nil {
				var ee *exitError
				if !errors.As(err, &ee) {
					f.logError(err)
				}
			}
			return err
		}
	}

	cmd.AddCommand(
		ociCreate(rt, wrap), ociStart(rt, wrap), ociState(rt, wrap), ociKill(rt, wrap),
		ociDelete(rt, wrap), ociRun(rt, wrap), ociExec(rt, wrap), ociList(rt, wrap),
		ociPs(rt, wrap), ociPause(rt, wrap), ociResume(rt, wrap), ociSpec(wrap),
	)
	return cmd
}

// logError mirrors runc's --log: containerd and runtime-tools read it.
func (f *ociFlags) logError(err error) {
	if f.log == "" {
		return
	}
	lf, e := os.OpenFile(f.log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if e != nil {
		return
	}
	defer lf.Close()
	now := time.Now().UTC().Format(time.RFC3339Nano)
	if f.logFormat == "json" {
		_ = json.NewEncoder(lf).Encode(map[string]string{"level": "error", "msg": err.Error(), "time": now})
		return
	}
	fmt.Fprintf(lf, "time=%q level=error msg=%q\n", now, err.Error())
}

type rtFunc func() (*container.Runtime, error)
type wrapFunc func(func(*cobra.Command, []string) error) func(*cobra.Command, []string) error

type createFlags struct {
	bundle, consoleSocket, pidFile string
	noPivot                        bool
}

func (cf *createFlags) register(c *cobra.Command) {
	c.Flags().StringVarP(&cf.bundle, "bundle", "b", ".", "path to the OCI bundle")
	c.Flags().StringVar(&cf.consoleSocket, "console-socket", "", "unix socket that receives the pty master")
	c.Flags().StringVar(&cf.pidFile, "pid-file", "", "write the init pid to this file")
	c.Flags().BoolVar(&cf.noPivot, "no-pivot", false, "use MS_MOVE and chroot instead of pivot_root")
	c.Flags().Bool("no-new-keyring", false, "accepted for runc compatibility")
	c.Flags().Int("preserve-fds", 0, "accepted for runc compatibility (must be 0)")
}

func (cf *createFlags) create(rt rtFunc, id string) (*container.Container, error) {
	r, err := rt()
	if err != nil {
		return nil, err
	}
	return r.Create(id, container.CreateOptions{
		Bundle: cf.bundle, ConsoleSocket: cf.consoleSocket, PidFile: cf.pidFile, NoPivot: cf.noPivot,
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
	})
}

func ociCreate(rt rtFunc, wrap wrapFunc) *cobra.Command {
	cf := &createFlags{}
	c := &cobra.Command{
		Use:   "create [flags] ID",
		Short: "create a container; its process waits for start",
		Args:  cobra.ExactArgs(1),
		RunE: wrap(func(_ *cobra.Command, args []string) error {
			_, err := cf.create(rt, args[0])
			return err
		}),
	}
	cf.register(c)
	return c
}

func load(rt rtFunc, id string) (*container.Container, error) {
	r, err := rt()
	if err != nil {
		return nil, err
	}
	return r.Get(id)
}

func ociStart(rt rtFunc, wrap wrapFunc) *cobra.Command {
	return &cobra.Command{
		Use:   "start ID",
		Short: "start a created container",
		Args:  cobra.ExactArgs(1),
		RunE: wrap(func(_ *cobra.Command, args []string) error {
			c, err := load(rt, args[0])
			if err != nil {
				return err
			}
			err = c.Start()
			var pe *container.PoststartError
			if errors.As(err, &pe) {
				fmt.Fprintln(os.Stderr, "migrated: warning: "+err.Error())
				return nil
			}
			return err
		}),
	}
}

func ociState(rt rtFunc, wrap wrapFunc) *cobra.Command {
	return &cobra.Command{
		Use:   "state ID",
		Short: "print the OCI state of a container",
		Args:  cobra.ExactArgs(1),
		RunE: wrap(func(_ *cobra.Command, args []string) error {
			c, err := load(rt, args[0])
			if err != nil {
				return err
			}
			st, err := c.State()
			if err != nil {
				return err
			}
			return printJSON(st)
		}),
	}
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// parseSignal accepts "9", "KILL", "SIGKILL" (any case).
func parseSignal(s string) (unix.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return 0, fmt.Errorf("invalid signal %q", s)
		}
		return unix.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("invalid signal %q", s)
}

func ociKill(rt rtFunc, wrap wrapFunc) *cobra.Command {
	var all bool
	c := &cobra.Command{
		Use:   "kill ID [SIGNAL]",
		Short: "send a signal (default SIGTERM) to the container's init",
		Args:  cobra.RangeArgs(1, 2),
		RunE: wrap(func(_ *cobra.Command, args []string) error {
			sig := unix.SIGTERM
			if len(args) == 2 {
				var err error
				if sig, err = parseSignal(args[1]); err != nil {
					return err
				}
			}
			c, err := load(rt, args[0])
			if err != nil {
				return err
			}
			return c.Signal(sig, all)
		}),
	}
	c.Flags().BoolVarP(&all, "all", "a", false, "signal every process of the container")
	return c
}

func ociDelete(rt rtFunc, wrap wrapFunc) *cobra.Command {
	var force bool
	c := &cobra.Command{
		Use:   "delete [--force] ID",
		Short: "delete a stopped container (or any, with --force)",
		Args:  cobra.ExactArgs(1),
		RunE: wrap(func(_ *cobra.Command, args []string) error {
			c, err := load(rt, args[0])
			if err != nil {
				return err
			}
			return c.Delete(force)
		}),
	}
	c.Flags().BoolVarP(&force, "force", "f", false, "kill the container's processes first")
	return c
}

func ociRun(rt rtFunc, wrap wrapFunc) *cobra.Command {
	cf := &createFlags{}
	var detach bool
	c := &cobra.Command{
		Use:   "run [flags] ID",
		Short: "create and start a container, and wait for it unless --detach",
		Args:  cobra.ExactArgs(1),
		RunE: wrap(func(_ *cobra.Command, args []string) error {
			// Signals arriving while we set up are forwarded, not fatal to us.
			sigs := make(chan os.Signal, 16)
			signal.Notify(sigs)
			defer signal.Stop(sigs)
			ctr, err := cf.create(rt, args[0])
			if err != nil {
				return err
			}
			if err := ctr.Start(); err != nil {
				var pe *container.PoststartError
				if !errors.As(err, &pe) {
					_ = ctr.Delete(true)
					return err
				}
				fmt.Fprintln(os.Stderr, "migrated: warning: "+err.Error())
			}
			if detach {
				return nil
			}
			done := make(chan struct{})
			go func() {
				for {
					select {
					case s := <-sigs:
						if sig, ok := s.(unix.Signal); ok && sig != unix.SIGCHLD && sig != unix.SIGURG && sig != unix.SIGWINCH {
							_ = ctr.Signal(sig, false)
						}
					case <-done:
						return
					}
				}
			}()
			code, err := ctr.Wait()
			close(done)
			if err != nil {
				return err
			}
			if err := ctr.Delete(true); err != nil {
				return err
			}
			if code != 0 {
				return &exitError{code}
			}
			return nil
		}),
	}
	cf.register(c)
	c.Flags().BoolVarP(&detach, "detach", "d", false, "do not wait for the container")
	return c
}

func ociExec(rt rtFunc, wrap wrapFunc) *cobra.Command {
	var (
		processFile, consoleSocket, pidFile, cwd, user string
		env, addCaps                                   []string
		tty, detach, nnp                               bool
	)
	c := &cobra.Command{
		Use:   "exec [flags] ID [COMMAND [ARG...]]",
		Short: "run a process in a running container",
		Args:  cobra.MinimumNArgs(1),
		RunE: wrap(func(_ *cobra.Command, args []string) error {
			ctr, err := load(rt, args[0])
			if err != nil {
				return err
			}
			p, err := execProcess(ctr.Spec(), processFile, args[1:])
			if err != nil {
				return err
			}
			if cwd != "" {
				p.Cwd = cwd
			}
			p.Env = append(p.Env, env...)
			if tty {
				p.Terminal = true
			}
			if nnp {
				p.NoNewPrivileges = true
			}
			if user != "" {
				if err := parseUser(user, &p.User); err != nil {
					return err
				}
			}
			if len(addCaps) > 0 {
				if p.Capabilities == nil {
					p.Capabilities = &specs.LinuxCapabilities{}
				}
				for _, cp := range addCaps {
					p.Capabilities.Bounding = append(p.Capabilities.Bounding, cp)
					p.Capabilities.Effective = append(p.Capabilities.Effective, cp)
					p.Capabilities.Permitted = append(p.Capabilities.Permitted, cp)
				}
			}
			// An exec into a new pid namespace is forked by the C constructor:
			// as subreaper we inherit and can wait for it.
			if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
				return err
			}
			proc, err := ctr.Exec(p, container.ExecOptions{
				ConsoleSocket: consoleSocket, PidFile: pidFile, Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
			})
			if err != nil {
				return err
			}
			if detach {
				return nil
			}
			code, err := proc.Wait()
			if err != nil {
				return err
			}
			if code != 0 {
				return &exitError{code}
			}
			return nil
		}),
	}
	fl := c.Flags()
	fl.SetInterspersed(false)
	fl.StringVarP(&processFile, "process", "p", "", "JSON file with the process to run")
	fl.StringVar(&consoleSocket, "console-socket", "", "unix socket that receives the pty master")
	fl.StringVar(&pidFile, "pid-file", "", "write the process pid to this file")
	fl.StringVar(&cwd, "cwd", "", "working directory")
	fl.StringVarP(&user, "user", "u", "", "UID[:GID]")
	fl.StringArrayVarP(&env, "env", "e", nil, "set an environment variable")
	fl.StringArrayVarP(&addCaps, "cap", "c", nil, "add a capability")
	fl.BoolVarP(&tty, "tty", "t", false, "allocate a pseudo-TTY")
	fl.BoolVarP(&detach, "detach", "d", false, "do not wait for the process")
	fl.BoolVar(&nnp, "no-new-privs", false, "set no_new_privs")
	return c
}

// execProcess builds the process from --process, or from the container's own
// process settings with new args.
func execProcess(s *specs.Spec, file string, args []string) (*specs.Process, error) {
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		var p specs.Process
		if err := json.Unmarshal(data, &p); err != nil {
			return nil, fmt.Errorf("process file %s: %w", file, err)
		}
		return &p, nil
	}
	if len(args) == 0 {
		return nil, errors.New("exec needs a command or --process")
	}
	p := *s.Process
	p.Args = args
	p.Terminal = false
	p.Env = append([]string(nil), s.Process.Env...)
	return &p, nil
}

func parseUser(s string, u *specs.User) error {
	uidS, gidS, hasGid := strings.Cut(s, ":")
	uid, err := strconv.ParseUint(uidS, 10, 32)
	if err != nil {
		return fmt.Errorf("invalid user %q: want UID[:GID]", s)
	}
	u.UID = uint32(uid)
	if hasGid {
		gid, err := strconv.ParseUint(gidS, 10, 32)
		if err != nil {
			return fmt.Errorf("invalid user %q: want UID[:GID]", s)
		}
		u.GID = uint32(gid)
	}
	return nil
}

type listEntry struct {
	ID          string            `json:"id"`
	Pid         int               `json:"pid"`
	Status      string            `json:"status"`
	Bundle      string            `json:"bundle"`
	Rootfs      string            `json:"rootfs"`
	Created     time.Time         `json:"created"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Owner       string            `json:"owner"`
}

func ociList(rt rtFunc, wrap wrapFunc) *cobra.Command {
	var format string
	var quiet bool
	c := &cobra.Command{
		Use:   "list",
		Short: "list containers",
		Args:  cobra.NoArgs,
		RunE: wrap(func(_ *cobra.Command, _ []string) error {
			r, err := rt()
			if err != nil {
				return err
			}
			cs, err := r.List()
			if err != nil {
				return err
			}
			entries := []listEntry{}
			for _, c := range cs {
				st, _ := c.State()
				entries = append(entries, listEntry{ID: c.ID(), Pid: st.Pid, Status: string(st.Status), Bundle: c.Bundle(),
					Rootfs: c.Rootfs(), Created: c.Created(), Annotations: st.Annotations, Owner: "root"})
			}
			switch {
			case quiet:
				for _, e := range entries {
					fmt.Println(e.ID)
				}
			case format == "json":
				return printJSON(entries)
			case format == "table":
				w := tabwriter.NewWriter(os.Stdout, 12, 1, 3, ' ', 0)
				fmt.Fprint(w, "ID\tPID\tSTATUS\tBUNDLE\tCREATED\tOWNER\n")
				for _, e := range entries {
					fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\n", e.ID, e.Pid, e.Status, e.Bundle, e.Created.Format(time.RFC3339Nano), e.Owner)
				}
				return w.Flush()
			default:
				return fmt.Errorf("invalid format %q: want table or json", format)
			}
			return nil
		}),
	}
	c.Flags().StringVarP(&format, "format", "f", "table", "table or json")
	c.Flags().BoolVarP(&quiet, "quiet", "q", false, "print ids only")
	return c
}

func ociPs(rt rtFunc, wrap wrapFunc) *cobra.Command {
	var format string
	c := &cobra.Command{
		Use:   "ps ID",
		Short: "list the processes of a container",
		Args:  cobra.ExactArgs(1),
		RunE: wrap(func(_ *cobra.Command, args []string) error {
			c, err := load(rt, args[0])
			if err != nil {
				return err
			}
			pids, err := c.Processes()
			if err != nil {
				return err
			}
			if format == "json" {
				if pids == nil {
					pids = []int{}
				}
				return printJSON(pids)
			}
			if format != "table" {
				return fmt.Errorf("invalid format %q: want table or json", format)
			}
			fmt.Println("PID\tCMD")
			for _, p := range pids {
				cmdline, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p), "cmdline"))
				fmt.Printf("%d\t%s\n", p, strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " ")))
			}
			return nil
		}),
	}
	c.Flags().StringVarP(&format, "format", "f", "table", "table or json")
	return c
}

func ociPause(rt rtFunc, wrap wrapFunc) *cobra.Command {
	return &cobra.Command{
		Use: "pause ID", Short: "freeze every process of a container", Args: cobra.ExactArgs(1),
		RunE: wrap(func(_ *cobra.Command, args []string) error {
			c, err := load(rt, args[0])
			if err != nil {
				return err
			}
			return c.Pause()
		}),
	}
}

func ociResume(rt rtFunc, wrap wrapFunc) *cobra.Command {
	return &cobra.Command{
		Use: "resume ID", Short: "thaw a paused container", Args: cobra.ExactArgs(1),
		RunE: wrap(func(_ *cobra.Command, args []string) error {
			c, err := load(rt, args[0])
			if err != nil {
				return err
			}
			return c.Resume()
		}),
	}
}

func ociSpec(wrap wrapFunc) *cobra.Command {
	var bundle string
	c := &cobra.Command{
		Use:   "spec",
		Short: "write a default config.json into the bundle directory",
		Args:  cobra.NoArgs,
		RunE: wrap(func(cmd *cobra.Command, _ []string) error {
			data, err := json.MarshalIndent(spec.Example(), "", "\t")
			if err != nil {
				return err
			}
			if bundle == "-" {
				_, err = io.WriteString(os.Stdout, string(data)+"\n")
				return err
			}
			path := filepath.Join(bundle, spec.ConfigName)
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
			if err != nil {
				if errors.Is(err, os.ErrExist) {
					return fmt.Errorf("%s already exists: remove it first", path)
				}
				return err
			}
			defer f.Close()
			_, err = f.Write(append(data, '\n'))
			return err
		}),
	}
	c.Flags().StringVarP(&bundle, "bundle", "b", ".", "bundle directory (- for stdout)")
	return c
}
