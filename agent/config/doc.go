// Package config holds migrated's configuration: the YAML file format, the embedded
// defaults used when there is no file, command-line overrides and validation.
package config
