// Command porcupine checks a gameday history.jsonl with Porcupine (a Go WGL linearizability
// checker), for bench/checker.py to compare against checks/linearizability.py on the same files.
//
//	go build -o porcupine-check . && ./porcupine-check history.jsonl
//
// It reads the history as the Python checker does (checks/history.py pairs each invoke with the
// process's next completion; an invoke without one is info) and gives each key a register with
// the same rules: ok consistent reads observe the value; write/put/update and delete (null) ok or
// info write; cas [expected, new] ok or info swaps; a cas that failed with no error or
// ConditionalCheckFailed observes a value other than expected; info ops return at +infinity and
// may or may not take effect; other ops take no part. It prints one JSON line: the CPU seconds
// (user + system, getrusage) spent loading and checking, and the verdict.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/anishathalye/porcupine"
)

type record struct {
	Type       string          `json:"type"`
	F          string          `json:"f"`
	Key        *string         `json:"key"`
	Value      json.RawMessage `json:"value"`
	Process    string          `json:"process"`
	Time       float64         `json:"time"`
	Error      *string         `json:"error"`
	Consistent *bool           `json:"consistent"`
}

const (
	opRead = iota
	opWrite
	opCas
	opMismatch
)

type input struct {
	kind     int
	arg      string // read: the value read; write: the value; cas and mismatch: expected
	new      string // cas: the new value
	definite bool
}

func canon(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "null"
	}
	var v interface{}
	if err := json.Unmarshal(raw, &v); err != nil {
		return string(raw)
	}
	out, _ := json.Marshal(v)
	return string(out)
}

func casArgs(raw json.RawMessage) (string, string, bool) {
	var pair []json.RawMessage
	if err := json.Unmarshal(raw, &pair); err != nil || len(pair) != 2 {
		return "", "", false
	}
	return canon(pair[0]), canon(pair[1]), true
}

func cpuSeconds() float64 {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		return 0
	}
	return float64(usage.Utime.Nano()+usage.Stime.Nano()) / 1e9
}

func toOperation(invoke record, done *record) (porcupine.Operation, bool) {
	kind := "info"
	ret := int64(math.MaxInt64)
	if done != nil {
		kind = done.Type
		if kind != "info" {
			ret = int64(math.Max(done.Time, invoke.Time) * 1e9)
		}
	}
	call := int64(invoke.Time * 1e9)
	definite := kind != "info"
	op := func(in input) (porcupine.Operation, bool) {
		in.definite = definite
		return porcupine.Operation{Input: in, Call: call, Return: ret}, true
	}
	switch invoke.F {
	case "read", "get":
		consistent := true
		if done != nil && done.Consistent != nil {
			consistent = *done.Consistent
		} else if invoke.Consistent != nil {
			consistent = *invoke.Consistent
		}
		if kind == "ok" && consistent {
			return op(input{kind: opRead, arg: canon(done.Value)})
		}
		return porcupine.Operation{}, false
	}
	if kind == "fail" {
		if invoke.F == "cas" && (done.Error == nil || strings.Contains(*done.Error, "ConditionalCheckFailed")) {
			if expected, _, ok := casArgs(invoke.Value); ok {
				return op(input{kind: opMismatch, arg: expected})
			}
		}
		return porcupine.Operation{}, false
	}
	switch invoke.F {
	case "write", "put", "update":
		return op(input{kind: opWrite, arg: canon(invoke.Value)})
	case "delete":
		return op(input{kind: opWrite, arg: "null"})
	case "cas":
		if expected, new, ok := casArgs(invoke.Value); ok {
			return op(input{kind: opCas, arg: expected, new: new})
		}
	}
	return porcupine.Operation{}, false
}

var registerModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var order []string
		for _, op := range history {
			key := op.Metadata.(string)
			if _, seen := byKey[key]; !seen {
				order = append(order, key)
			}
			byKey[key] = append(byKey[key], op)
		}
		out := make([][]porcupine.Operation, 0, len(order))
		for _, key := range order {
			out = append(out, byKey[key])
		}
		return out
	},
	Init: func() interface{} { return "null" },
	Step: func(state, in, _ interface{}) (bool, interface{}) {
		s, i := state.(string), in.(input)
		switch i.kind {
		case opRead:
			return s == i.arg, s
		case opWrite:
			return true, i.arg
		case opCas:
			if s == i.arg {
				return true, i.new
			}
			return !i.definite, s // an info cas that found another value did nothing
		default: // opMismatch
			return s != i.arg, s
		}
	},
	Equal: func(a, b interface{}) bool { return a.(string) == b.(string) },
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: porcupine-check history.jsonl")
		os.Exit(2)
	}
	startCPU := cpuSeconds()
	file, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	defer file.Close()
	scanner := bufio.NewScanner(file)
	scanner.Buffer(make([]byte, 1<<20), 64<<20)
	pending := map[string]record{}
	var history []porcupine.Operation
	add := func(invoke record, done *record) {
		if invoke.Key == nil {
			return
		}
		if op, ok := toOperation(invoke, done); ok {
			op.Metadata = *invoke.Key
			history = append(history, op)
		}
	}
	for scanner.Scan() {
		line := scanner.Bytes()
		if len(strings.TrimSpace(string(line))) == 0 {
			continue
		}
		var r record
		if err := json.Unmarshal(line, &r); err != nil {
			continue // a torn last line
		}
		switch r.Type {
		case "invoke":
			if previous, open := pending[r.Process]; open {
				add(previous, nil)
			}
			pending[r.Process] = r
		case "ok", "fail", "info":
			if invoke, open := pending[r.Process]; open {
				delete(pending, r.Process)
				done := r
				add(invoke, &done)
			}
		}
	}
	for _, invoke := range pending {
		add(invoke, nil)
	}
	loadCPU := cpuSeconds() - startCPU
	started := time.Now()
	result := porcupine.CheckOperationsTimeout(registerModel, history, 10*time.Minute)
	out, _ := json.Marshal(map[string]interface{}{
		"ops":       len(history),
		"load_cpu":  loadCPU,
		"check_cpu": cpuSeconds() - startCPU - loadCPU,
		"check_s":   time.Since(started).Seconds(),
		"result":    string(result),
	})
	fmt.Println(string(out))
}
