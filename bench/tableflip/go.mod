module github.com/sockd/sockd/bench/tableflip

go 1.24

require github.com/cloudflare/tableflip v1.2.3
