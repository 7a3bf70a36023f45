// The hello world: answers every url job with "Hello from go #<n>".
//
// Run: hello [QUEUE] (default "tempest"), Redis from TEMPEST_REDIS_URL.
package main

import (
	"fmt"
	"os"

	"tempest"
)

func main() {
	queue := "tempest"
	if len(os.Args) > 1 {
		queue = os.Args[1]
	}
	worker := tempest.NewWorker(tempest.Options{Queues: []string{queue}})
	count := 0
	worker.On("url", func(c *tempest.Context, args []any) (any, error) {
		count++
		return []any{200, map[string]string{"Content-Type": "text/plain"}, fmt.Sprintf("Hello from go #%d", count)}, nil
	})
	if err := worker.Run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
