package transfer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"

	"github.com/migratehq/migrate/runtime/atomicfile"
)

// The journal lists completed chunks of a transfer: an 8-byte magic, then 12-byte
// records (file index, chunk index, CRC-32C of those 8 bytes; little endian). It
// is append-only; a torn or corrupt tail (crash during append) ends the valid
// part. A record is appended only after its chunk's data was fdatasync'd, so a
// listed chunk is on disk.
var journalMagic = []byte("MGTJRN01")

const journalRecord = 12

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type journal struct {
	path    string
	f       *os.File
	pending []byte
	noSync  bool // Receiver.NoSync
}

// openJournal reads the journal at path into done (which must be empty and
// describe the same header) and opens it for appending. A journal that names
// chunks outside the header is discarded: resending is always safe.
func openJournal(path string, done *chunkSet, noSync bool) (*journal, error) {
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read journal: %w", err)
	}
	valid := 0
	if bytes.HasPrefix(data, journalMagic) {
		valid = len(journalMagic)
		for rec := data[valid:]; len(rec) >= journalRecord; rec = rec[journalRecord:] {
			if crc32.Checksum(rec[:8], castagnoli) != binary.LittleEndian.Uint32(rec[8:12]) {
				break
			}
			file, idx := binary.LittleEndian.Uint32(rec[0:4]), int64(binary.LittleEndian.Uint32(rec[4:8]))
			if !done.valid(file, idx) {
				for f := range done.bits {
					done.clearFile(uint32(f))
				}
				valid = 0
				break
			}
			done.set(file, idx)
			valid += journalRecord
		}
	}
	j := &journal{path: path, noSync: noSync}
	if valid == 0 {
		if err := j.rewrite(done); err != nil {
			return nil, err
		}
		return j, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	// Cut a torn tail so appended records stay aligned.
	if valid < len(data) {
		if err := f.Truncate(int64(valid)); err != nil {
			f.Close()
			return nil, fmt.Errorf("truncate journal: %w", err)
		}
	}
	if _, err := f.Seek(int64(valid), 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("seek journal: %w", err)
	}
	j.f = f
	return j, nil
}

func appendRecord(b []byte, file uint32, idx int64) []byte {
	var rec [journalRecord]byte
	binary.LittleEndian.PutUint32(rec[0:4], file)
	binary.LittleEndian.PutUint32(rec[4:8], uint32(idx))
	binary.LittleEndian.PutUint32(rec[8:12], crc32.Checksum(rec[:8], castagnoli))
	return append(b, rec[:]...)
}

// add queues a record; flush makes it durable.
func (j *journal) add(file uint32, idx int64) { j.pending = appendRecord(j.pending, file, idx) }

// flush appends queued records and fsyncs the journal. The caller has synced the
// data of the chunks first.
func (j *journal) flush() error {
	if len(j.pending) == 0 {
		return nil
	}
	if _, err := j.f.Write(j.pending); err != nil {
		return fmt.Errorf("append journal: %w", err)
	}
	if !j.noSync {
		if err := j.f.Sync(); err != nil {
			return fmt.Errorf("sync journal: %w", err)
		}
	}
	j.pending = j.pending[:0]
	return nil
}

// rewrite replaces the journal with exactly the chunks in done, atomically, and
// drops queued records.
func (j *journal) rewrite(done *chunkSet) error {
	buf := append([]byte(nil), journalMagic...)
	for f := range done.sizes {
		for i := range chunkCount(done.sizes[f], done.chunkSize) {
			if done.has(uint32(f), i) {
				buf = appendRecord(buf, uint32(f), i)
			}
		}
	}
	if err := writeFileAtomic(j.path, buf, !j.noSync); err != nil {
		return fmt.Errorf("rewrite journal: %w", err)
	}
	f, err := os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("open journal: %w", err)
	}
	if j.f != nil {
		j.f.Close()
	}
	j.f, j.pending = f, j.pending[:0]
	return nil
}

func (j *journal) close() error {
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory and a rename; with sync, durably (atomicfile.WriteFile).
func writeFileAtomic(path string, data []byte, sync bool) error {
	if sync {
		return atomicfile.WriteFile(path, data, 0o600)
	}
	return atomicfile.WriteFileNoSync(path, data, 0o600)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
