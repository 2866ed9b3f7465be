package buildinfo

import (
	"regexp"
	"testing"
)

func TestFooter(t *testing.T) {
	token := regexp.MustCompile(`^[0-9A-Za-z.-]*$`)
	for _, tc := range []struct {
		info           Info
		version, build string
	}{
		{Info{Version: "(devel)"}, "devel", ""},
		{Info{Version: "v1.2.3"}, "v1.2.3", ""},
		{Info{Version: "v0.0.0-20261207032103-a32817328781+dirty", Revision: "a3281732878187633786df1736a23a60571a46f7", Modified: true},
			"v0.0.0-20261207032103-a32817328781-dirty", "a32817328781-dirty"},
	} {
		v, b := tc.info.Footer()
		if v != tc.version || b != tc.build || !token.MatchString(v) || !token.MatchString(b) {
			t.Errorf("%+v: Footer() = %q, %q; want %q, %q", tc.info, v, b, tc.version, tc.build)
		}
	}
	if s := (Info{Version: "v1.2.3", Revision: "a3281732878187633786", Time: "2026-12-07T03:21:03Z", GoVersion: "go1.26.8"}).String(); s != "tailsift v1.2.3 (revision a32817328781, 2026-12-07T03:21:03Z) go1.26.8" {
		t.Errorf("String() = %q", s)
	}
}
