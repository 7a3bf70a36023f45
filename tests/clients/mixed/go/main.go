// The Go leg of the mixed tests: a url job fans out one `part` to each queue named on the
// command line, gathers their answers (3 s at most) and answers them as JSON.
// Usage: gather QUEUE PART_QUEUE...
package main

import (
	"encoding/json"
	"os"
	"time"

	"tempest"
)

func main() {
	parts := os.Args[2:]
	w := tempest.NewWorker(tempest.Options{Queues: []string{os.Args[1]}})
	w.On("url", func(c *tempest.Context, args []any) (any, error) {
		fanout := make([]tempest.Part, len(parts))
		for i, queue := range parts {
			fanout[i] = tempest.Part{Queue: queue, Action: "part", Args: []any{i + 1}}
		}
		results, err := c.Gather(fanout, 3*time.Second)
		if err != nil {
			return nil, err
		}
		body, err := json.Marshal(results)
		if err != nil {
			return nil, err
		}
		return []any{200, map[string]string{"Content-Type": "application/json"}, string(body)}, nil
	})
	w.Run()
}
