package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	migratev1 "github.com/migratehq/migrate/api/migrate/v1"
	"github.com/migratehq/migrate/runtime/atomicfile"
	"github.com/migratehq/migrate/transfer"
)

// A target records each move it restores in <data>/moved-in/<transfer id>, on disk,
// because the source decides the move's outcome from the reply to RestoreMoved: if
// this agent dies before that reply arrives, the source resumes its copy once
// AbortMove confirms, and AbortMove on the restarted agent must still know which
// container to remove (docs/move.md, "Exactly once").
const (
	movedInDir = "moved-in"
	// movedInExpiry is how long a restored move's record is kept: far beyond
	// the source's AbortMove retries.
	movedInExpiry = time.Hour
)

// Record states.
const (
	movedInRestoring = "restoring" // written before CRIU restores
	movedInRestored  = "restored"  // the container runs; the reply may be lost
)

type movedIn struct {
	Container string    `json:"container"`
	From      string    `json:"from,omitempty"`
	State     string    `json:"state"`
	Time      time.Time `json:"time"`
}

func (s *Service) movedInPath(transferID string) string {
	return filepath.Join(s.cfg.DataDir, movedInDir, transferID)
}

// writeMovedIn records the state of an incoming move durably.
func (s *Service) writeMovedIn(transferID string, r movedIn) error {
	if err := os.MkdirAll(filepath.Join(s.cfg.DataDir, movedInDir), 0o700); err != nil {
		return err
	}
	r.Time = time.Now().UTC()
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(s.movedInPath(transferID), b, 0o600)
}

// readMovedIn reads the record of an incoming move.
func (s *Service) readMovedIn(transferID string) (movedIn, error) {
	var r movedIn
	b, err := os.ReadFile(s.movedInPath(transferID))
	if err == nil {
		err = json.Unmarshal(b, &r)
	}
	return r, err
}

func (s *Service) removeMovedIn(transferID string) {
	if err := os.Remove(s.movedInPath(transferID)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("remove moved-in record", "transfer", transferID, "err", err)
	}
}

// recoverMovedIn runs at start, after the containers were recovered. A restore
// that was running when the agent stopped never answered the source, which
// therefore resumes its copy: the container restored here is removed. A restored
// move is remembered for AbortMove until its record expires.
func (s *Service) recoverMovedIn() {
	dir := filepath.Join(s.cfg.DataDir, movedInDir)
	des, _ := os.ReadDir(dir)
	for _, de := range des {
		id := de.Name()
		if transfer.ValidateID(id) != nil {
			os.Remove(filepath.Join(dir, id))
			continue
		}
		r, err := s.readMovedIn(id)
		switch {
		case err != nil:
			s.log.Warn("unreadable moved-in record removed", "transfer", id, "err", err)
			s.removeMovedIn(id)
		case r.State == movedInRestored:
			if time.Since(r.Time) < movedInExpiry {
				s.moves.in(id).restored = r.Container
			} else {
				s.removeMovedIn(id)
			}
		default:
			if err := s.dropMovedContainer(r.Container); err != nil {
				s.log.Error("container of an interrupted incoming move not removed", "id", r.Container, "transfer", id, "err", err)
				continue
			}
			s.log.Warn("removed what an incoming move interrupted by the agent's stop restored", "id", r.Container, "transfer", id)
			s.removeMovedIn(id)
		}
	}
}

// dropMovedContainer removes a container restored by an incoming move that did
// not complete, if it exists.
func (s *Service) dropMovedContainer(id string) error {
	if id == "" {
		return nil
	}
	if _, err := s.lookup(id); err != nil {
		return nil
	}
	if _, err := s.Delete(s.bg, &migratev1.DeleteRequest{Id: id, Force: true}); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("remove %s: %w", id, err)
	}
	return nil
}

// expireMovedIn forgets restored moves older than movedInExpiry: their source
// has long decided.
func (s *Service) expireMovedIn() {
	dir := filepath.Join(s.cfg.DataDir, movedInDir)
	des, _ := os.ReadDir(dir)
	for _, de := range des {
		fi, err := de.Info()
		if err != nil || time.Since(fi.ModTime()) < movedInExpiry {
			continue
		}
		in := s.moves.in(de.Name())
		if !in.mu.TryLock() {
			continue
		}
		if r, err := s.readMovedIn(de.Name()); err == nil && r.State == movedInRestored {
			s.removeMovedIn(de.Name())
			in.restored = ""
		}
		in.mu.Unlock()
	}
}
