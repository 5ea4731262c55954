package snapshot

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Meta keys a snapshot carries in the pagestore.
const (
	MetaContainer = "container"   // id of the container snapshotted
	MetaTrigger   = "trigger"     // TriggerManual or TriggerSchedule
	MetaDowntime  = "downtimeNs"  // how long the container was frozen, ns
	MetaDump      = "dumpNs"      // how long the dump took, ns
	MetaBase      = "baseDigest"  // rootfs base the snapshot's diff applies to
	MetaNode      = "node"        // node that took it
	MetaCRIU      = "criuVersion" // CRIU version that dumped it
)

// Triggers.
const (
	TriggerManual   = "manual"
	TriggerSchedule = "schedule"
)

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]`)

// Name is the snapshot name for container id at t: "<id>-<UTC time with
// milliseconds>", the id's characters outside the store's set replaced by
// '_'. Names sort by time within a container.
func Name(id string, t time.Time) (string, error) {
	n := unsafeName.ReplaceAllString(id, "_") + "-" + t.UTC().Format("20060102T150405.000Z")
	if len(n) > 128 || strings.HasPrefix(n, ".") || strings.HasPrefix(n, "-") {
		return "", fmt.Errorf("snapshot name for container %q: id too long or starts badly", id)
	}
	return n, nil
}
