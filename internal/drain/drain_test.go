package drain

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/sockd/sockd/worker/workertest"
)

// TestQuietSeesArrivedData: data that reached the socket after the
// snapshot, read or not, keeps a connection from being closed.
func TestQuietSeesArrivedData(t *testing.T) {
	l := workertest.Listen(t)
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	rcvd, known := ReceivedBytes(server)
	if !known {
		t.Skip("TCP_INFO bytes_received not available")
	}
	if !Quiet(server, rcvd, known) {
		t.Fatal("Quiet() = false with nothing sent")
	}
	io.WriteString(client, "GET")
	workertest.Eventually(t, 5*time.Second, "data pending", func() bool { return !Quiet(server, rcvd, known) })
	io.ReadFull(server, make([]byte, 3))
	if Quiet(server, rcvd, known) {
		t.Error("Quiet() = true after data was read: TCP_INFO should show it arrived")
	}
	if rcvd, known = ReceivedBytes(server); !Quiet(server, rcvd, known) {
		t.Error("Quiet() = false after a new snapshot")
	}
}
