// Package buildinfo says which tailsift a binary holds: the module version
// and the VCS revision the Go toolchain recorded when it was built. The
// version command prints it, the archive writes it into every Parquet file's
// created_by, and nodes export it as tailsift_build_info, so a file or a
// metric can be traced to the code that produced it.
package buildinfo

import (
	"runtime/debug"
	"strings"
	"sync"
)

// module is tailsift's module path; the version is looked up by it so that
// a program embedding tailsift's packages reports tailsift's version, not
// its own.
const module = "github.com/tailsift/tailsift"

// Info is the build of the tailsift module in this binary.
type Info struct {
	Version   string // v1.2.3 from go install …@v1.2.3; a pseudo-version or "(devel)" from a clone
	Revision  string // VCS commit, when built from a checkout; empty otherwise
	Time      string // VCS commit time, RFC 3339
	Modified  bool   // the checkout had uncommitted changes
	GoVersion string
}

// Get returns the build information, read once.
var Get = sync.OnceValue(func() Info {
	info := Info{Version: "(unknown)"}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return info
	}
	info.GoVersion = bi.GoVersion
	switch {
	case bi.Main.Path == module:
		info.Version = bi.Main.Version
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				info.Revision = s.Value
			case "vcs.time":
				info.Time = s.Value
			case "vcs.modified":
				info.Modified = s.Value == "true"
			}
		}
	default:
		for _, d := range bi.Deps {
			if d.Path == module {
				info.Version = d.Version
			}
		}
	}
	if info.Version == "" {
		info.Version = "(devel)"
	}
	return info
})

// ShortRevision is the first 12 characters of the revision, with "+dirty"
// when the checkout had changes; empty when there is no revision.
func (i Info) ShortRevision() string {
	r := i.Revision
	if len(r) > 12 {
		r = r[:12]
	}
	if r != "" && i.Modified {
		r += "+dirty"
	}
	return r
}

// Footer returns the version and build to write into a Parquet file's
// created_by ("tailsift version V(build B)"), reduced to letters, digits,
// dots and dashes. Readers parse that field to recognise writers and their
// known bugs; with the version of a build from a clone, "(devel)", files of
// a three-node cluster read back with rows missing
// (TestClusterKeepsTracesWhole).
func (i Info) Footer() (version, build string) {
	return footerToken(i.Version), footerToken(i.ShortRevision())
}

func footerToken(s string) string {
	return strings.Trim(strings.Map(func(r rune) rune {
		switch {
		case r >= '0' && r <= '9', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r == '.', r == '-':
			return r
		}
		return '-'
	}, s), "-")
}

// String is the one line `tailsift version` prints.
func (i Info) String() string {
	var b strings.Builder
	b.WriteString("tailsift " + i.Version)
	if r := i.ShortRevision(); r != "" {
		b.WriteString(" (revision " + r)
		if i.Time != "" {
			b.WriteString(", " + i.Time)
		}
		b.WriteString(")")
	}
	if i.GoVersion != "" {
		b.WriteString(" " + i.GoVersion)
	}
	return b.String()
}
