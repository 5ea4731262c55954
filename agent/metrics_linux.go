package agent

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	migratev1 "github.com/migratehq/migrate/api/migrate/v1"
	"github.com/migratehq/migrate/metrics"
)

// serveMetrics registers the agent's metrics and, when configured, serves them
// on their own plain-HTTP listener (read-only figures, no secrets: scraping
// must not need the cluster's certificates). It returns the server to close.
func (s *Service) serveMetrics(ctx context.Context, errc chan<- error) (*http.Server, error) {
	reg := metrics.NewRegistry()
	ci := s.node.get(ctx).GetCriu()
	rec, err := metrics.New(reg, metrics.Options{
		Info:       metrics.AgentInfo{Version: s.version, Node: s.cfg.Node, CRIUVersion: ci.GetVersion(), CgroupMode: CgroupMode()},
		StartTime:  s.started,
		Containers: s.containerCounts,
	})
	if err != nil {
		return nil, err
	}
	s.rec = rec
	if s.cfg.Metrics.Listen == "" {
		return nil, nil
	}
	l, err := net.Listen("tcp", s.cfg.Metrics.Listen)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics.Handler(reg))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	s.log.Info("metrics listener", "addr", l.Addr().String())
	return srv, nil
}

// containerCounts counts the node's containers by status for the gauge.
func (s *Service) containerCounts() map[string]int {
	ctx, cancel := context.WithTimeout(s.bg, 2*time.Second)
	defer cancel()
	r, err := s.List(ctx, &migratev1.ListRequest{})
	if err != nil {
		return nil
	}
	out := map[string]int{}
	for _, c := range r.Containers {
		out[strings.ToLower(strings.TrimPrefix(c.Status.String(), "CONTAINER_STATUS_"))]++
	}
	return out
}

// resultOf classifies an operation's outcome for the metrics; failed says
// which step a failure without a more specific cause belongs to.
func resultOf(err error, failed metrics.Reason) (metrics.Result, metrics.Reason) {
	switch {
	case err == nil:
		return metrics.ResultSuccess, metrics.ReasonNone
	case errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled:
		return metrics.ResultFailure, metrics.ReasonCancelled
	case errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded:
		return metrics.ResultFailure, metrics.ReasonTimeout
	case errors.Is(err, ErrUnavailable):
		return metrics.ResultFailure, metrics.ReasonTargetUnreachable
	}
	return metrics.ResultFailure, failed
}

// moveFailure names the step of a failed move from its error.
func moveFailure(err error) metrics.Reason {
	msg := err.Error()
	switch {
	case strings.Contains(msg, ": transfer to "):
		return metrics.ReasonTransfer
	case strings.Contains(msg, ": restore on "):
		return metrics.ReasonRestore
	case strings.Contains(msg, "dump") || strings.Contains(msg, "checkpoint"):
		return metrics.ReasonDump
	}
	return metrics.ReasonOther
}
