//go:build linux && cgo

package nsenter

/*
#cgo CFLAGS: -Wall
extern void migrate_nsenter(void);
void __attribute__((constructor)) init(void) {
	migrate_nsenter();
}
*/
import "C"
