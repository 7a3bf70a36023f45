module tempest/mixed

go 1.19

require (
	github.com/gomodule/redigo v1.8.3
	tempest v0.0.0
)

replace (
	github.com/gomodule/redigo => /usr/share/gocode/src/github.com/gomodule/redigo
	tempest => ../../../../clients/go
)
