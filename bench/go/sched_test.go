// Go peers of kcoro's scheduler benchmarks (bench/native/bench.zig, "sched" figures).
// Run by bench/run.ts:  go test -run '^$' -bench . -benchtime 1x -count 5 -cpu 2
// (each benchmark sizes its own work; -benchtime 1x runs it once per count).
package bench

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkCreateGoroutines is the Go runtime's own benchmark: chains of goroutines, each
// starting the next and exiting (kcoro: "spawn + run to completion").
func BenchmarkCreateGoroutines(b *testing.B) {
	const n = 1_000_000
	procs := runtime.GOMAXPROCS(-1)
	for it := 0; it < b.N; it++ {
		start := time.Now()
		c := make(chan bool)
		var f func(n int)
		f = func(n int) {
			if n == 0 {
				c <- true
				return
			}
			go f(n - 1)
		}
		for i := 0; i < procs; i++ {
			go f(n / procs)
		}
		for i := 0; i < procs; i++ {
			<-c
		}
		b.ReportMetric(float64(time.Since(start).Nanoseconds())/n, "ns/spawn")
	}
}

// BenchmarkPingPongHog is the Go runtime's own benchmark: a ping-pong over unbuffered
// channels on one P, next to a CPU hog (kcoro: "yield round trip on one worker").
func BenchmarkPingPongHog(b *testing.B) {
	const n = 1_000_000
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	for it := 0; it < b.N; it++ {
		stop, done := make(chan bool), make(chan bool)
		go func() {
			for {
				select {
				case <-stop:
					done <- true
					return
				default:
				}
			}
		}()
		ping, pong := make(chan bool), make(chan bool)
		go func() {
			for j := 0; j < n; j++ {
				pong <- <-ping
			}
			close(stop)
			done <- true
		}()
		go func() {
			for i := 0; i < n; i++ {
				ping <- <-pong
			}
			done <- true
		}()
		start := time.Now()
		ping <- true
		<-stop
		elapsed := time.Since(start)
		<-ping
		<-done
		<-done
		<-done
		b.ReportMetric(float64(elapsed.Nanoseconds())/n, "ns/roundtrip")
	}
}

func skynet(c chan int, num, size, div int) {
	if size == 1 {
		c <- num
		return
	}
	rc := make(chan int)
	var sum int
	for i := 0; i < div; i++ {
		subNum := num + i*(size/div)
		go skynet(rc, subNum, size/div, div)
	}
	for i := 0; i < div; i++ {
		sum += <-rc
	}
	c <- sum
}

// BenchmarkSkynet: a 10-ary tree of 1,000,000 goroutines summing their indices.
func BenchmarkSkynet(b *testing.B) {
	for it := 0; it < b.N; it++ {
		start := time.Now()
		c := make(chan int)
		go skynet(c, 0, 1_000_000, 10)
		if got := <-c; got != 499999500000 {
			b.Fatalf("skynet sum %d", got)
		}
		b.ReportMetric(float64(time.Since(start).Nanoseconds())/1e6, "ms/skynet")
	}
}

func rss() int64 {
	data, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(data))
	pages, _ := strconv.ParseInt(fields[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// BenchmarkParked1M: resident bytes per goroutine for 1,000,000 goroutines blocked on a channel.
func BenchmarkParked1M(b *testing.B) {
	const n = 1_000_000
	for it := 0; it < b.N; it++ {
		runtime.GC()
		base := runtime.NumGoroutine()
		before := rss()
		release := make(chan struct{})
		for i := 0; i < n; i++ {
			go func() { <-release }()
		}
		for runtime.NumGoroutine() < base+n {
			time.Sleep(time.Millisecond)
		}
		after := rss()
		close(release)
		b.ReportMetric(float64(after-before)/n, "bytes/goroutine")
		for runtime.NumGoroutine() > base {
			time.Sleep(time.Millisecond)
		}
	}
}

func spinWork(rounds uint64) uint64 {
	x := uint64(0x9E3779B97F4A7C15)
	for i := uint64(0); i < rounds; i++ {
		x ^= x >> 30
		x *= 0xBF58476D1CE4E5B9
		x ^= x >> 27
		x *= 0x94D049BB133111EB
		x ^= x >> 31
	}
	return x
}

var sink uint64

// BenchmarkFanOut: 64 CPU-bound tasks of 2,000,000 hash steps; run with -cpu 1,2 for the speedup.
func BenchmarkFanOut(b *testing.B) {
	for it := 0; it < b.N; it++ {
		start := time.Now()
		done := make(chan uint64)
		for i := 0; i < 64; i++ {
			go func() { done <- spinWork(2_000_000) }()
		}
		var acc uint64
		for i := 0; i < 64; i++ {
			acc += <-done
		}
		sink = acc
		b.ReportMetric(float64(time.Since(start).Nanoseconds())/1e6, "ms/fanout")
	}
}
