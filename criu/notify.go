package criu

import "os"

// Notify receives CRIU's notifications ("action scripts") during dump and
// restore. A method returning an error makes CRIU abort the operation; the
// error is then part of the operation's *Error. Embed NoNotify to implement
// only some of them.
type Notify interface {
	PreDump() error
	PostDump() error
	PreRestore() error
	PostRestore(pid int32) error
	NetworkLock() error
	NetworkUnlock() error
	SetupNamespaces(pid int32) error
	PostSetupNamespaces() error
	PreResume() error
	PostResume() error
}

// OrphanPtsMasterNotify is implemented by a Notify that wants the master side
// of an orphaned pty restored with RestoreOptions.OrphanPtsMaster. The callee
// owns master and must close it.
type OrphanPtsMasterNotify interface {
	OrphanPtsMaster(master *os.File) error
}

// ExternalFilesNotify is implemented by a Notify that declares external files
// late in a dump, once CRIU has collected the process tree ("query-ext-files").
// The returned keys have the syntax of DumpOptions.External.
type ExternalFilesNotify interface {
	QueryExternalFiles() ([]string, error)
}

// StatusReadyNotify is implemented by a Notify that wants to know when CRIU is
// ready for its peer: for a lazy-pages dump, the images are complete and the
// page server listens ("status-ready"). It must return quickly: CRIU waits for
// the answer before it serves anything.
type StatusReadyNotify interface {
	StatusReady() error
}

// NoNotify implements Notify by accepting every notification.
type NoNotify struct{}

var _ Notify = NoNotify{}

func (NoNotify) PreDump() error                  { return nil }
func (NoNotify) PostDump() error                 { return nil }
func (NoNotify) PreRestore() error               { return nil }
func (NoNotify) PostRestore(pid int32) error     { return nil }
func (NoNotify) NetworkLock() error              { return nil }
func (NoNotify) NetworkUnlock() error            { return nil }
func (NoNotify) SetupNamespaces(pid int32) error { return nil }
func (NoNotify) PostSetupNamespaces() error      { return nil }
func (NoNotify) PreResume() error                { return nil }
func (NoNotify) PostResume() error               { return nil }

// dispatchNotify calls the method of n for CRIU's script name. fd is the file
// CRIU passed with the notification, if any; it is closed unless handed over.
// Unknown scripts are accepted so that a newer CRIU keeps working.
func dispatchNotify(n Notify, script string, pid int32, fd *os.File) (external []string, err error) {
	if fd != nil && script != "orphan-pts-master" {
		defer fd.Close()
	}
	switch script {
	case "pre-dump":
		return nil, n.PreDump()
	case "post-dump":
		return nil, n.PostDump()
	case "pre-restore":
		return nil, n.PreRestore()
	case "post-restore":
		return nil, n.PostRestore(pid)
	case "network-lock":
		return nil, n.NetworkLock()
	case "network-unlock":
		return nil, n.NetworkUnlock()
	case "setup-namespaces":
		return nil, n.SetupNamespaces(pid)
	case "post-setup-namespaces":
		return nil, n.PostSetupNamespaces()
	case "pre-resume":
		return nil, n.PreResume()
	case "post-resume":
		return nil, n.PostResume()
	case "orphan-pts-master":
		if o, ok := n.(OrphanPtsMasterNotify); ok && fd != nil {
			return nil, o.OrphanPtsMaster(fd)
		}
		if fd != nil {
			fd.Close()
		}
		return nil, nil
	case "status-ready":
		if r, ok := n.(StatusReadyNotify); ok {
			return nil, r.StatusReady()
		}
		return nil, nil
	case "query-ext-files":
		if q, ok := n.(ExternalFilesNotify); ok {
			return q.QueryExternalFiles()
		}
		return nil, nil
	default:
		return nil, nil
	}
}
