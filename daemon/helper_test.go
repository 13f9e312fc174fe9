package daemon

import "github.com/sockd/sockd/worker/workertest"

// waitFor waits on cond with a deadline.
var waitFor = workertest.Eventually
