package sqlstore

import (
	"testing"
	"time"
)

// TestDBTimeScan: every value a driver can hand over reads as one exact
// time, and Scan never fails.
func TestDBTimeScan(t *testing.T) {
	earliest := time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)
	latest := time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC)
	at := func(s string) *time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return &v
	}
	ist := time.FixedZone("IST", 5*3600+1800)
	tests := []struct {
		name string
		src  any
		// want is at() (and ptr()); wantExpiry is expiry(). nil: NULL,
		// or for expiry also "never".
		want, wantExpiry *time.Time
	}{
		{"NULL", nil, nil, nil},
		{"a time", time.Date(2030, 1, 2, 3, 4, 5, 123456000, time.UTC), at("2030-01-02T03:04:05.123456Z"), at("2030-01-02T03:04:05.123456Z")},
		{"a time in another zone", time.Date(2030, 1, 2, 3, 4, 5, 0, ist), at("2030-01-01T21:34:05Z"), at("2030-01-01T21:34:05Z")},
		{"the latest time", latest, &latest, &latest},
		{"after the year 9999", time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), &latest, &latest},
		{"the year 294276", time.Date(294276, 1, 1, 0, 0, 0, 0, time.UTC), &latest, &latest},
		{"1 BC (year 0)", time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), &earliest, &earliest},
		{"4713 BC", time.Date(-4712, 1, 1, 0, 0, 0, 0, time.UTC), &earliest, &earliest},
		{"PostgreSQL infinity", []byte("infinity"), &latest, nil},
		{"PostgreSQL -infinity", []byte("-infinity"), &earliest, &earliest},
		{"text infinity", "infinity", &latest, nil},
		{"text -infinity", "-infinity", &earliest, &earliest},
		{"text with offset", "2030-01-02 03:04:05.5+05:30", at("2030-01-01T21:34:05.5Z"), at("2030-01-01T21:34:05.5Z")},
		{"text with T and offset", "2030-01-02T03:04:05-01:00", at("2030-01-02T04:04:05Z"), at("2030-01-02T04:04:05Z")},
		{"text without offset is UTC", "2030-01-02 03:04:05.123456789", at("2030-01-02T03:04:05.123456789Z"), at("2030-01-02T03:04:05.123456789Z")},
		{"text with T and Z", "2030-01-02T03:04:05Z", at("2030-01-02T03:04:05Z"), at("2030-01-02T03:04:05Z")},
		{"text to the minute", "2030-01-02 03:04", at("2030-01-02T03:04:00Z"), at("2030-01-02T03:04:00Z")},
		{"text to the minute, T and Z", "2030-01-02T03:04Z", at("2030-01-02T03:04:00Z"), at("2030-01-02T03:04:00Z")},
		{"text date", "2030-01-02", at("2030-01-02T00:00:00Z"), at("2030-01-02T00:00:00Z")},
		{"text date and space (before version 4)", "2030-01-02 ", at("2030-01-02T00:00:00Z"), at("2030-01-02T00:00:00Z")},
		{"text date and T (before version 4)", "2030-01-02T", at("2030-01-02T00:00:00Z"), at("2030-01-02T00:00:00Z")},
		{"text as bytes", []byte("2030-01-02 03:04:05"), at("2030-01-02T03:04:05Z"), at("2030-01-02T03:04:05Z")},
		{"junk text", "junk", &earliest, &earliest},
		{"empty text", "", &earliest, &earliest},
		{"now", "now", &earliest, &earliest},
		{"no such day", "2030-02-31", &earliest, &earliest},
		{"hour 24", "2030-01-02 24:00:00", &earliest, &earliest},
		{"space before the offset", "2030-01-02 03:04:05 +01:00", &earliest, &earliest},
		{"integer", int64(1700000000), &earliest, &earliest},
		{"real", 2460000.5, &earliest, &earliest},
		{"bool", true, &earliest, &earliest},
		{"blob", []byte{0, 1, 2}, &earliest, &earliest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d dbTime
			d.t = time.Now() // Scan must not keep anything of an earlier value
			if err := d.Scan(tt.src); err != nil {
				t.Fatalf("Scan(%#v) = %v", tt.src, err)
			}
			if got := d.ptr(); !sameTime(got, tt.want) {
				t.Errorf("ptr() = %v, want %v", got, tt.want)
			}
			if got := d.expiry(); !sameTime(got, tt.wantExpiry) {
				t.Errorf("expiry() = %v, want %v", got, tt.wantExpiry)
			}
			if tt.want != nil {
				if got := d.at(); !got.Equal(*tt.want) || got.Location() != time.UTC {
					t.Errorf("at() = %v, want %v in UTC", got, *tt.want)
				}
				if _, err := d.at().MarshalJSON(); err != nil {
					t.Errorf("at() does not print as JSON: %v", err)
				}
			}
		})
	}
}

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b) && a.Location() == time.UTC
}
