package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	migratev1 "github.com/migratehq/migrate/api/migrate/v1"
)

// printDetail prints one object of an inspect command: JSON unless YAML was
// asked for (there is no table for a whole object).
func printDetail(g *globals, w io.Writer, m proto.Message) error {
	if g.output == "table" {
		g.output = "json"
	}
	_, err := printMessage(g, w, m)
	return err
}

// printMessage writes m as JSON or YAML; it returns false for table output, which
// the caller renders.
func printMessage(g *globals, w io.Writer, m proto.Message) (bool, error) {
	if g.output == "table" {
		return false, nil
	}
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return true, err
	}
	if g.output == "yaml" {
		if b, err = yaml.JSONToYAML(b); err != nil {
			return true, err
		}
	} else {
		b = append(b, '\n')
	}
	_, err = w.Write(b)
	return true, err
}

func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

func statusText(c *migratev1.Container) string {
	s := strings.ToLower(strings.TrimPrefix(c.Status.String(), "CONTAINER_STATUS_"))
	if c.Status == migratev1.ContainerStatus_CONTAINER_STATUS_STOPPED && c.ExitedAt != nil {
		s = fmt.Sprintf("exited (%d)", c.ExitCode)
	}
	return s
}

func ago(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	d := time.Since(t.AsTime()).Round(time.Second)
	return d.String() + " ago"
}

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// progressPrinter shows operation progress: a redrawn bar on a terminal, one plain
// line per event otherwise (logs, CI, pipes).
type progressPrinter struct {
	w     io.Writer
	tty   bool
	drawn bool
}

func newProgressPrinter(f *os.File) *progressPrinter {
	return &progressPrinter{w: f, tty: isTerminal(f)}
}

func (p *progressPrinter) event(ev *migratev1.OperationEvent) {
	pr := ev.Progress
	if pr == nil {
		p.finish()
		return
	}
	id := ""
	if ev.Operation != nil {
		id = ev.Operation.ContainerId + ": "
	}
	if !p.tty {
		line := id + pr.Phase
		if pr.Message != "" {
			line += ": " + pr.Message
		}
		if pr.Total > 0 {
			line += fmt.Sprintf(" (%d/%d %s)", pr.Done, pr.Total, pr.Unit)
		}
		fmt.Fprintln(p.w, line)
		return
	}
	const width = 30
	bar := ""
	if pr.Total > 0 {
		n := int(min(pr.Done, pr.Total) * width / pr.Total)
		bar = fmt.Sprintf("[%s%s] %3d%% ", strings.Repeat("=", n), strings.Repeat(" ", width-n), min(pr.Done, pr.Total)*100/pr.Total)
	}
	fmt.Fprintf(p.w, "\r\033[K%s%s%s %s", id, bar, pr.Phase, pr.Message)
	p.drawn = true
}

func (p *progressPrinter) finish() {
	if p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}
