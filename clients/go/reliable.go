package tempest

import (
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Reliable delivery, with exactly tempest/reliable.py's commands: a heartbeat key and the
// registration "<queue> <worker id>", jobs moved into tempest:processing:{<queue>}:<worker id>,
// that list DELeted once the job is answered, what is left given back on a clean stop. Every
// script and move names one queue's keys only (its slot on a cluster).

// move up to ARGV[1] jobs from the queue (KEYS[1]) to the processing list (KEYS[2])
const takeScript = `
local out = {}
for i = 1, tonumber(ARGV[1]) do
  local job = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
  if not job then break end
  out[#out + 1] = job
end
return out
`

// everything left in a processing list (KEYS[1]) back to the head of its queue (KEYS[2]), oldest first
const giveBackAllScript = `
local n = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT') do n = n + 1 end
return n
`

func (w *Worker) processing(queue string) string {
	return "tempest:processing:{" + queue + "}:" + w.WorkerID
}

// lowKey is the list of the queue's low-priority jobs.
func lowKey(queue string) string {
	return "tempest:low:{" + queue + "}"
}

func (w *Worker) entries() []any {
	entries := []any{"tempest:workers"}
	for _, q := range w.Queues {
		entries = append(entries, q+" "+w.WorkerID)
	}
	return entries
}

// sendBeat sets the heartbeat, then registers (never registered without a heartbeat): two
// commands, each to its key's master on a cluster, the second only once the first succeeded.
func (w *Worker) sendBeat(conn redis.Conn) error {
	if _, err := conn.Do("SET", "tempest:alive:"+w.WorkerID, "1", "PX", w.opts.Heartbeat.Milliseconds()); err != nil {
		return err
	}
	_, err := conn.Do("SADD", w.entries()...)
	return err
}

// beat is the heartbeat goroutine, on its own connection so that a long handler does not stop it.
func (w *Worker) beat(stop <-chan struct{}, done *sync.WaitGroup) {
	defer done.Done()
	var conn redis.Conn
	ticker := time.NewTicker(w.opts.Heartbeat / 3)
	defer ticker.Stop()
	for {
		select {
		case <-stop:
			if conn != nil {
				conn.Close()
			}
			return
		case <-ticker.C:
		}
		if !w.isRegistered() {
			continue
		}
		var err error
		if conn == nil {
			conn, err = w.dial(5 * time.Second)
		}
		if err == nil {
			err = w.sendBeat(conn)
		}
		if err != nil {
			w.Log.Printf("heartbeat failed: %v", err)
			if conn != nil {
				conn.Close()
				conn = nil
			}
		}
	}
}

func (w *Worker) isRegistered() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.registered
}

// takeReliable is take, moving the job into this worker's processing list of its queue.
func (w *Worker) takeReliable() ([]byte, error) {
	if !w.isRegistered() {
		if _, err := w.command("PING"); err != nil { // (re)connects
			return nil, err
		}
		if err := w.sendBeat(w.queue); err != nil {
			w.queue.Close()
			w.queue = nil
			return nil, err
		}
		w.mu.Lock()
		w.registered = true
		w.mu.Unlock()
	}
	for _, queue := range w.Queues {
		jobs, err := redis.ByteSlices(w.command("EVAL", takeScript, 2, queue, w.processing(queue), 1))
		if err != nil {
			return nil, err
		}
		if len(jobs) > 0 {
			w.holding = queue
			return jobs[0], nil
		}
	}
	// every queue is empty: a low-priority job, into the processing list of its queue
	for _, queue := range w.Queues {
		job, err := redis.Bytes(w.command("LMOVE", lowKey(queue), w.processing(queue), "LEFT", "RIGHT"))
		if err == redis.ErrNil {
			continue
		}
		if err != nil {
			return nil, err
		}
		w.holding = queue
		return job, nil
	}
	// block on the first queue alone: a low job pushed meanwhile waits at most this timeout
	queue := w.Queues[0]
	timeout := PollTimeout.Seconds()
	if len(w.Queues) > 1 {
		timeout = 0.1 // the other queues are polled meanwhile
	}
	job, err := redis.Bytes(w.command("BLMOVE", queue, w.processing(queue), "LEFT", "RIGHT", timeout))
	if err == redis.ErrNil {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	w.holding = queue
	return job, nil
}

// release: the job taken from the held queue is answered, its processing list emptied.
func (w *Worker) release() {
	queue := w.holding
	w.holding = ""
	if _, err := w.command("DEL", w.processing(queue)); err != nil {
		w.Log.Printf("cannot release the finished jobs of %s (%v): they may be delivered again", queue, err)
	}
}

// unregister: a clean stop; jobs still held (none, normally) go back, the worker is forgotten.
func (w *Worker) unregister() {
	for _, queue := range w.Queues {
		if _, err := w.command("EVAL", giveBackAllScript, 2, w.processing(queue), queue); err != nil {
			w.Log.Printf("cannot unregister from Redis (%v): tempestd will give back what is left", err)
			return
		}
	}
	w.command("SREM", w.entries()...)
	w.command("DEL", "tempest:alive:"+w.WorkerID)
}
