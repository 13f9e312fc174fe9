package nodeshim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Message is what a Node worker tells sockd over its IPC channel: the
// part of sd_notify(3) that a worker sends, for workers that cannot send a
// datagram (Node has no unix datagram sockets, a FROM scratch image has no
// systemd-notify). The shape on the channel (one JSON value per line, as
// Node writes with NODE_CHANNEL_SERIALIZATION_MODE=json):
//
//	"ready"                                      READY=1 (PM2's wait_ready message)
//	{"sockd": {"ready": true}}                   READY=1
//	{"sockd": {"status": "warming the cache"}}   STATUS=warming the cache
//	{"sockd": {"requests": 1234}}                SOCKD_REQUESTS=1234 (cumulative)
//	{"sockd": {"stopping": true}}                STOPPING=1 (exiting on its own accord)
//	{"sockd": {"watchdog": true}}                WATCHDOG=1
//
// Fields combine: {"sockd": {"ready": true, "status": "serving"}}. A false
// flag is the same as an absent one. Any other message (an object without
// a "sockd" key, another string) is the app's business and not sockd's.
type Message struct {
	Ready bool
	// AppReady: Ready came from the app's own process.send('ready'), not
	// from sockd's preload.
	AppReady bool
	Stopping bool
	Watchdog bool
	// Status is STATUS=, when HasStatus.
	Status    string
	HasStatus bool
	// Requests is SOCKD_REQUESTS=, when HasRequests.
	Requests    int64
	HasRequests bool
}

// ErrEmpty is returned for a sockd message that carries nothing.
var ErrEmpty = errors.New(`sockd message without a field (want ready, status, requests, stopping or watchdog)`)

// ParseMessage reads one line of the channel. It returns:
//
//   - (m, true, nil): a message for sockd;
//   - (Message{}, false, nil): a message that is not for sockd (ignore it);
//   - (Message{}, true, err): a message meant for sockd that is malformed
//     (an unknown field, a wrong type); err says what, in one line.
func ParseMessage(line []byte) (Message, bool, error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || (line[0] != '"' && line[0] != '{') {
		return Message{}, false, nil
	}
	if line[0] == '"' {
		var s string
		if json.Unmarshal(line, &s) == nil && s == "ready" {
			return Message{Ready: true, AppReady: true}, true, nil
		}
		return Message{}, false, nil
	}
	var outer map[string]json.RawMessage
	if json.Unmarshal(line, &outer) != nil {
		return Message{}, false, nil
	}
	raw, ok := outer["sockd"]
	if !ok {
		return Message{}, false, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return Message{}, true, fmt.Errorf(`sockd message: "sockd" must be an object, not %.40s`, raw)
	}
	m, err := parseFields(fields)
	if err != nil {
		return Message{}, true, fmt.Errorf("sockd message: %w", err)
	}
	return m, true, nil
}

func parseFields(fields map[string]json.RawMessage) (Message, error) {
	var m Message
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names) // the first error is the same on every run
	for _, k := range names {
		v := fields[k]
		var err error
		switch k {
		case "ready":
			m.Ready, err = flag(v)
		case "stopping":
			m.Stopping, err = flag(v)
		case "watchdog":
			m.Watchdog, err = flag(v)
		case "status":
			err = json.Unmarshal(v, &m.Status)
			if err != nil || bytes.Equal(v, []byte("null")) {
				err = errors.New("want a string")
			} else if strings.ContainsAny(m.Status, "\n\x00") {
				err = errors.New("a status is one line")
			}
			m.HasStatus = err == nil
		case "requests":
			m.Requests, err = count(v)
			m.HasRequests = err == nil
		default:
			return Message{}, fmt.Errorf("unknown field %q (want ready, status, requests, stopping or watchdog)", k)
		}
		if err != nil {
			return Message{}, fmt.Errorf("%s: %w, not %.40s", k, err, v)
		}
	}
	if len(fields) == 0 {
		return Message{}, ErrEmpty
	}
	return m, nil
}

func flag(v json.RawMessage) (bool, error) {
	var b bool
	if json.Unmarshal(v, &b) != nil || bytes.Equal(v, []byte("null")) {
		return false, errors.New("want true or false")
	}
	return b, nil
}

func count(v json.RawMessage) (int64, error) {
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil || f < 0 || f != math.Trunc(f) || f > 1<<53 {
		return 0, errors.New("want a whole number >= 0")
	}
	return int64(f), nil
}

// Fields returns the message as sd_notify assignments (READY=1, STATUS=…,
// SOCKD_REQUESTS=…, STOPPING=1, WATCHDOG=1), the form the rest of sockd
// already handles for datagrams.
func (m Message) Fields() map[string]string {
	f := make(map[string]string)
	if m.Ready {
		f["READY"] = "1"
	}
	if m.HasStatus {
		f["STATUS"] = m.Status
	}
	if m.HasRequests {
		f["SOCKD_REQUESTS"] = strconv.FormatInt(m.Requests, 10)
	}
	if m.Stopping {
		f["STOPPING"] = "1"
	}
	if m.Watchdog {
		f["WATCHDOG"] = "1"
	}
	return f
}
