// Package node holds a sockd worker written for Node.js (server.js) and
// the Go test that runs it under load the way sockd does; see README.md.
package node
