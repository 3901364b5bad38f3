package migrations

import "io/fs"

// The migrator on a directory of the test's own, and the naming rule.
var (
	UpFS       = up
	CheckNames = checkNames
	CheckName  = checkName
)

// Embedded is the directory of the embedded migrations.
func Embedded() fs.FS {
	fsys, err := embedded()
	if err != nil {
		panic(err)
	}
	return fsys
}
