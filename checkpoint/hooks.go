package checkpoint

// Point names a boundary in a job's life where Config.Hook is called.
// Tests use the hook to fail or "crash" the publisher exactly there.
type Point string

// Hook points, in the order a job passes them.
const (
	AtPlanned      Point = "planned"       // job row created (state planned, started; lease and ids in the same commit)
	AtLeased       Point = "leased"        // catalog and spool leases held
	AtStaged       Point = "staged"        // action staged and verified (Event.Path is the file)
	AtUploaded     Point = "uploaded"      // action uploaded, progress saved
	AtAllUploaded  Point = "all-uploaded"  // every action uploaded, state uploaded
	AtPublishing   Point = "publishing"    // just before the log record is created
	AtRecordLanded Point = "record-landed" // record created and applied, job row not yet published
	AtPublished    Point = "published"     // state published saved
	AtReleased     Point = "released"      // spool lease released (the catalog lease ends with the job row, at completed)
	AtTruncated    Point = "truncated"     // spool truncated
	AtCompleted    Point = "completed"     // state completed saved, catalog lease released, quota returned
)

// Points lists every hook point in order.
var Points = []Point{AtPlanned, AtLeased, AtStaged, AtUploaded, AtAllUploaded, AtPublishing, AtRecordLanded,
	AtPublished, AtReleased, AtTruncated, AtCompleted}

// Event is what a hook sees.
type Event struct {
	Point  Point
	Job    string
	Action int    // the action index, for AtStaged and AtUploaded; else -1
	Path   string // the staging file, for AtStaged
}

// Hook is called at every Point. Returning an error fails the job there
// as an I/O error would (the job stays unfinished and resumes later);
// returning an error wrapping ErrCrash stops the publisher dead, cleaning
// up nothing, as if the process had been killed at that point.
type Hook func(Event) error
