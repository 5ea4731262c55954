package snapshot

import (
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/robfig/cron/v3"
)

// ErrInvalid is returned for a schedule that cannot be used: bad interval,
// cron expression, retention or jitter.
var ErrInvalid = errors.New("invalid schedule")

// MinEvery is the shortest interval a schedule may have: a snapshot pauses
// the container, and one a second is already more than any use needs.
const MinEvery = time.Second

// MaxJitter bounds the jitter a schedule may ask for.
const MaxJitter = time.Hour

// Schedule is one container's snapshot schedule as persisted.
type Schedule struct {
	ContainerID string `json:"containerId"`
	// Exactly one of Every and Cron is set.
	Every Duration `json:"every,omitempty"`
	Cron  string   `json:"cron,omitempty"`
	// Retention of this schedule's snapshots; all zero keeps every one.
	KeepLast   int `json:"keepLast,omitempty"`
	KeepHourly int `json:"keepHourly,omitempty"`
	KeepDaily  int `json:"keepDaily,omitempty"`
	// Jitter is the bound of the per-container delay added to each planned
	// time, so that containers on one schedule do not all freeze at once.
	Jitter  Duration  `json:"jitter"`
	Created time.Time `json:"created"`
	// LastRun, LastSnapshot and LastError describe the latest run.
	LastRun      time.Time `json:"lastRun,omitzero"`
	LastSnapshot string    `json:"lastSnapshot,omitempty"`
	LastError    string    `json:"lastError,omitempty"`
}

// Duration is a time.Duration written as "15m0s" in JSON.
type Duration time.Duration

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// DefaultJitter is the jitter of a schedule that gives none: a tenth of its
// interval (for cron, of the gap after the next run), at most 5 minutes.
func DefaultJitter(every time.Duration) time.Duration {
	return min(every/10, 5*time.Minute)
}

// Validate checks the schedule and parses its cron expression.
func (s *Schedule) Validate() error {
	if s.ContainerID == "" {
		return fmt.Errorf("%w: no container", ErrInvalid)
	}
	switch {
	case s.Every != 0 && s.Cron != "":
		return fmt.Errorf("%w: give either an interval or a cron expression, not both", ErrInvalid)
	case s.Every == 0 && s.Cron == "":
		return fmt.Errorf("%w: give an interval (--every) or a cron expression (--cron)", ErrInvalid)
	case s.Every != 0 && time.Duration(s.Every) < MinEvery:
		return fmt.Errorf("%w: interval %s is shorter than %s", ErrInvalid, time.Duration(s.Every), MinEvery)
	}
	if s.Cron != "" {
		if _, err := ParseCron(s.Cron); err != nil {
			return err
		}
	}
	if s.KeepLast < 0 || s.KeepHourly < 0 || s.KeepDaily < 0 {
		return fmt.Errorf("%w: retention counts must not be negative", ErrInvalid)
	}
	if s.Jitter < 0 || time.Duration(s.Jitter) > MaxJitter {
		return fmt.Errorf("%w: jitter %s is not within 0..%s", ErrInvalid, time.Duration(s.Jitter), MaxJitter)
	}
	return nil
}

// cronParser takes the standard five fields (minute hour day-of-month month
// day-of-week) and the @hourly/@daily/... descriptors.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseCron parses a five-field cron expression (times in UTC).
func ParseCron(expr string) (cron.Schedule, error) {
	sch, err := cronParser.Parse(expr)
	if err != nil {
		return nil, fmt.Errorf("%w: cron expression %q: %v", ErrInvalid, expr, err)
	}
	return sch, nil
}

// Planned returns the next planned time strictly after t, before jitter.
// Intervals are aligned to the Unix epoch, so the grid survives an agent
// restart: a 15m schedule runs at :00, :15, :30, :45 whenever it was set.
// The schedule must be valid.
func (s *Schedule) Planned(t time.Time) time.Time {
	t = t.UTC()
	if s.Every != 0 {
		every := time.Duration(s.Every)
		next := t.Truncate(every).Add(every)
		return next
	}
	sch, err := ParseCron(s.Cron)
	if err != nil {
		return time.Time{}
	}
	return sch.Next(t)
}

// Offset is the container's jitter: a fixed delay in [0, Jitter) derived from
// its id, so the same container always runs at the same point of the window
// (its snapshots stay evenly spaced) while different containers spread out.
func (s *Schedule) Offset() time.Duration {
	if s.Jitter <= 0 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(s.ContainerID))
	return time.Duration(h.Sum64() % uint64(s.Jitter))
}

// Next returns when the schedule fires next after t, jitter included: the
// first planned time p with p+Offset after t.
func (s *Schedule) Next(t time.Time) time.Time {
	off := s.Offset()
	return s.Planned(t.Add(-off)).Add(off)
}

// Describe is the schedule's specification as a user wrote it.
func (s *Schedule) Describe() string {
	if s.Every != 0 {
		return "every " + time.Duration(s.Every).String()
	}
	return "cron " + s.Cron
}
