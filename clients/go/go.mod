module tempest

go 1.19

require github.com/gomodule/redigo v1.8.3

// Debian's golang-github-gomodule-redigo-dev: builds offline (GOPROXY=off, see the Makefile)
replace github.com/gomodule/redigo => /usr/share/gocode/src/github.com/gomodule/redigo
