package sqlstore

import (
	"strings"
	"time"
)

// Both databases can hold times that a driver does not hand over as a
// time.Time: PostgreSQL's 'infinity' and '-infinity' (lib/pq returns them
// as text unless its process-wide EnableInfinityTs is called), years after
// 9999 or before 1 BC (which RFC 3339 and JSON cannot print), and on SQLite,
// which keeps times as text, whatever was typed by hand before the schema
// refused it. Every time column is read through dbTime, whose Scan never
// fails, so that one odd row cannot fail a read of every row beside it:
//
//	infinity                       the latest time (expires_at: never)
//	-infinity, unreadable text     the earliest time (expires_at: expired)
//	after 9999 / before 1 BC       the latest / earliest time
//
// The earliest time is 0000-01-01T00:00:00Z and the latest
// 9999-12-31T23:59:59.999999Z: the ends of what RFC 3339 prints, at the
// store's microsecond precision.

// earliestTime is the earliest time the store returns.
func earliestTime() time.Time { return time.Date(0, time.January, 1, 0, 0, 0, 0, time.UTC) }

// latestTime is the latest time the store returns.
func latestTime() time.Time {
	return time.Date(9999, time.December, 31, 23, 59, 59, 999999000, time.UTC)
}

// timeKind says what a time column held.
type timeKind uint8

const (
	timeNull       timeKind = iota // NULL
	timeFinite                     // a time, in t
	timeInfinity                   // 'infinity'
	timeMinus                      // '-infinity'
	timeUnreadable                 // a value that is no time
)

// dbTime is a time column as the store reads it. It implements
// sql.Scanner and accepts every value either driver returns.
type dbTime struct {
	t    time.Time // UTC, within [earliestTime, latestTime]; set when finite
	kind timeKind
}

// Scan reads src. It never returns an error: a value that is no time is
// kept as timeUnreadable and read as the earliest time.
func (d *dbTime) Scan(src any) error {
	*d = dbTime{kind: timeUnreadable}
	switch v := src.(type) {
	case nil:
		d.kind = timeNull
	case time.Time:
		d.setFinite(v)
	case []byte:
		d.scanText(string(v))
	case string:
		d.scanText(v)
	}
	return nil
}

// scanText reads a time the driver left as text: PostgreSQL's infinities,
// or on SQLite a time in a column the driver does not know as one (an
// expression's result) or in a form it does not parse.
func (d *dbTime) scanText(s string) {
	switch s {
	case "infinity":
		d.kind = timeInfinity
		return
	case "-infinity":
		d.kind = timeMinus
		return
	}
	if t, ok := parseSQLiteTime(s); ok {
		d.setFinite(t)
	}
}

func (d *dbTime) setFinite(t time.Time) {
	t = t.UTC()
	switch {
	case t.Before(earliestTime()):
		t = earliestTime()
	case t.After(latestTime()):
		t = latestTime()
	}
	d.t, d.kind = t, timeFinite
}

// parseSQLiteTime parses the text forms of a time that the SQLite driver
// reads in a TIMESTAMP column (and that the schema's triggers accept): a
// date, optionally followed by a space or T and HH:MM, or HH:MM:SS[.fff]
// with an optional offset; either may end in Z. A time without an offset
// is UTC, as in SQLite's own date functions.
func parseSQLiteTime(s string) (time.Time, bool) {
	s = strings.TrimSuffix(s, "Z")
	for _, layout := range [...]string{
		"2006-01-02 15:04:05.999999999-07:00",
		"2006-01-02T15:04:05.999999999-07:00",
		"2006-01-02 15:04:05.999999999",
		"2006-01-02T15:04:05.999999999",
		"2006-01-02 15:04",
		"2006-01-02T15:04",
		"2006-01-02",
		"2006-01-02 ", // refused since version 4; SQLite reads it as midnight
		"2006-01-02T",
	} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// at is the time of a NOT NULL column: infinity reads as the latest time;
// -infinity, a value that is no time (and NULL, which the schema refuses)
// as the earliest.
func (d dbTime) at() time.Time {
	switch d.kind {
	case timeFinite:
		return d.t
	case timeInfinity:
		return latestTime()
	}
	return earliestTime()
}

// ptr is the time of a nullable column such as last_used_at: nil for NULL,
// else as [dbTime.at].
func (d dbTime) ptr() *time.Time {
	if d.kind == timeNull {
		return nil
	}
	t := d.at()
	return &t
}

// expiry is expires_at: nil (never expires) for NULL and infinity. A value
// that is no time reads as the earliest time, like -infinity, so that a
// key whose expiry cannot be understood is refused rather than let
// through; it still counts as active, so its clients stay locked.
func (d dbTime) expiry() *time.Time {
	if d.kind == timeInfinity {
		return nil
	}
	return d.ptr()
}
