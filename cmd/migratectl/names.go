package main

import "github.com/migratehq/migrate/agent/config"

func validNodeName(s string) bool { return config.ValidName(s) }
