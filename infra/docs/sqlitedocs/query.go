package sqlitedocs

import (
	"context"
	"fmt"
	"strings"

	"github.com/lethe-dev/lethe/infra/docs"
)

// Query returns the documents of q.Collection matching every filter, as
// Firestore would: a document lacking a filtered or OrderBy field is not
// returned; a filter matches only values of its own type (an int64 filter
// never matches a string value); integers order before strings; ties are
// broken by key (user, then id) in the direction of the order.
func (s *Driver) Query(ctx context.Context, q docs.Query, after *docs.Position) ([]docs.Doc, error) {
	query, args, err := buildQuery(q, after)
	if err != nil {
		return nil, err
	}
	rows, err := s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite.Query: %w", err)
	}
	defer rows.Close()
	var out []docs.Doc
	for rows.Next() {
		var user, id, fields string
		var data []byte
		if err := rows.Scan(&user, &id, &data, &fields); err != nil {
			return nil, fmt.Errorf("sqlite.Scan: %w", err)
		}
		f, err := decodeFields(fields)
		if err != nil {
			return nil, err
		}
		if data == nil {
			data = []byte{}
		}
		out = append(out, docs.Doc{
			Key:    docs.Key{User: user, Collection: q.Collection, ID: id},
			Data:   data,
			Fields: f,
		})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite.Rows: %w", err)
	}
	return out, nil
}

// buildQuery turns q into SQL. Every field named by a filter or OrderBy is
// joined once from the fields table, so the indexes on (user, coll, name,
// v) and (coll, name, v) serve both the filters and the order. q was
// validated by docs.Store (filter values normalised); after, when not nil,
// keeps the rows strictly after it in the order.
func buildQuery(q docs.Query, after *docs.Position) (string, []any, error) {

	alias := map[string]string{}
	var joins []string
	var joinArgs []any
	join := func(name string) string {
		if a, ok := alias[name]; ok {
			return a
		}
		a := fmt.Sprintf("f%d", len(alias))
		alias[name] = a
		joins = append(joins, fmt.Sprintf(
			" JOIN fields %[1]s ON %[1]s.user = d.user AND %[1]s.coll = d.coll AND %[1]s.id = d.id AND %[1]s.name = ?", a))
		joinArgs = append(joinArgs, name)
		return a
	}

	where := []string{"d.coll = ?"}
	whereArgs := []any{q.Collection}
	if !q.AllUsers {
		where = append(where, "d.user = ?")
		whereArgs = append(whereArgs, q.User)
	}
	for _, f := range q.Filters {
		v := f.Value
		var op string
		switch f.Op {
		case docs.Eq:
			op = "="
		case docs.Lt, docs.Lte, docs.Gt, docs.Gte:
			op = string(f.Op)
		default:
			return "", nil, fmt.Errorf("%w: filter operator", docs.ErrInvalid)
		}
		a := join(f.Field)
		where = append(where, fmt.Sprintf("%s.v %s ?", a, op))
		whereArgs = append(whereArgs, v)
		// Keep range filters to their own type. Integers sort before all
		// text (and text before blobs, never stored), so one bound suffices
		// and the index range stays tight.
		_, isInt := v.(int64)
		switch {
		case isInt && (f.Op == docs.Gt || f.Op == docs.Gte):
			where = append(where, a+".v < ''")
		case !isInt && (f.Op == docs.Lt || f.Op == docs.Lte):
			where = append(where, a+".v >= ''")
		}
	}

	dir := ""
	if q.Desc {
		dir = " DESC"
	}
	// Order by the joined index's own columns (equal to d.user, d.id), so
	// the index yields rows in order and a Limit stops early.
	t := "d"
	var order []string
	if q.OrderBy != "" {
		t = join(q.OrderBy)
		order = append(order, t+".v"+dir)
	}
	order = append(order, t+".user"+dir, t+".id"+dir)
	if after != nil {
		cmpOp := ">"
		if q.Desc {
			cmpOp = "<"
		}
		// A row value compares as the ORDER BY does: v is an untyped
		// ANY column, so integers sort before text here too.
		if q.OrderBy != "" {
			where = append(where, fmt.Sprintf("(%[1]s.v, %[1]s.user, %[1]s.id) %s (?, ?, ?)", t, cmpOp))
			whereArgs = append(whereArgs, after.Value, after.User, after.ID)
		} else {
			where = append(where, fmt.Sprintf("(%[1]s.user, %[1]s.id) %s (?, ?)", t, cmpOp))
			whereArgs = append(whereArgs, after.User, after.ID)
		}
	}

	var b strings.Builder
	b.WriteString("SELECT d.user, d.id, d.data, d.fields FROM docs d")
	for _, j := range joins {
		b.WriteString(j)
	}
	b.WriteString(" WHERE ")
	b.WriteString(strings.Join(where, " AND "))
	b.WriteString(" ORDER BY ")
	b.WriteString(strings.Join(order, ", "))
	args := append(joinArgs, whereArgs...)
	if q.Limit > 0 {
		b.WriteString(" LIMIT ?")
		args = append(args, q.Limit)
	}
	return b.String(), args, nil
}
