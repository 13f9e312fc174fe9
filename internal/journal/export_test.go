package journal

// SetWriteBuffer sets the socket's send buffer, so that a test knows which
// entries are too large for a datagram.
func (c *Conn) SetWriteBuffer(n int) error { return c.c.SetWriteBuffer(n) }
