// Package streamtest is a client of GET /v1/listen for tests and benchmarks:
// it dials as a wearable (Authorization header) or a browser (bearer
// subprotocol), sends audio and reads the server's messages.
package streamtest

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/lethe-dev/lethe/functions"
)

// Message is any server message: hello, ack or transcript.
type Message struct {
	Type    string `json:"type"`
	Seq     *int   `json:"seq"`
	LastSeq *int   `json:"last_seq"`
	EndMS   *int64 `json:"end_ms"`
	Text    string `json:"text"`
}

// Client is one streaming connection.
type Client struct {
	Conn  *websocket.Conn
	Hello Message
}

// Options say how to dial.
type Options struct {
	Token string
	// Browser sends the token as the "bearer.<token>" subprotocol beside
	// "lethe.v1" instead of in the Authorization header.
	Browser bool
	// Query is conversation_id, codec and sample_rate.
	Query url.Values
}

// Dial opens a stream at base (the edge's http:// URL). A connection the
// server refuses after the handshake returns its close error from the
// hello read: CloseStatus tells the code.
func Dial(ctx context.Context, base string, o Options) (*Client, error) {
	u := "ws" + strings.TrimPrefix(base, "http") + "/v1/listen?" + o.Query.Encode()
	opts := &websocket.DialOptions{HTTPHeader: http.Header{}}
	if o.Browser {
		opts.Subprotocols = []string{"lethe.v1", "bearer." + o.Token}
	} else if o.Token != "" {
		opts.HTTPHeader.Set("Authorization", "Bearer "+o.Token)
	}
	conn, resp, err := websocket.Dial(ctx, u, opts)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("websocket.Dial: status %d: %w", resp.StatusCode, err)
		}
		return nil, fmt.Errorf("websocket.Dial: %w", err)
	}
	conn.SetReadLimit(1 << 20)
	c := &Client{Conn: conn}
	if c.Hello, err = c.Next(ctx); err != nil {
		conn.CloseNow()
		return nil, err
	}
	if c.Hello.Type != "hello" {
		conn.CloseNow()
		return nil, fmt.Errorf("first message is %q, not hello", c.Hello.Type)
	}
	return c, nil
}

// DialResuming dials again after a drop: the dropped connection may still be
// cutting its last chunk, and the conversation answers 4409 until it is
// done; it retries until ctx ends.
func DialResuming(ctx context.Context, base string, o Options) (*Client, error) {
	for {
		c, err := Dial(ctx, base, o)
		if err == nil || websocket.CloseStatus(err) != functions.CloseBusy {
			return c, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Next reads the next server message.
func (c *Client) Next(ctx context.Context) (Message, error) {
	typ, b, err := c.Conn.Read(ctx)
	if err != nil {
		return Message{}, err
	}
	var m Message
	if typ != websocket.MessageText {
		return m, errors.New("binary message from the server")
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("json.Unmarshal server message: %w", err)
	}
	return m, nil
}

// ResumeMS is where the stream resumes: the hello's end_ms, 0 when new.
func (c *Client) ResumeMS() int64 {
	if c.Hello.EndMS == nil {
		return 0
	}
	return *c.Hello.EndMS
}

// SendPCM sends samples as little-endian PCM16 in frames of frameBytes
// (any size, odd too: the server cuts chunks mid-frame).
func (c *Client) SendPCM(ctx context.Context, samples []int16, frameBytes int) error {
	b := make([]byte, 2*len(samples))
	for i, s := range samples {
		binary.LittleEndian.PutUint16(b[2*i:], uint16(s))
	}
	for len(b) > 0 {
		n := min(frameBytes, len(b))
		if err := c.Conn.Write(ctx, websocket.MessageBinary, b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// SendPackets sends each Opus packet as one binary message.
func (c *Client) SendPackets(ctx context.Context, packets [][]byte) error {
	for _, p := range packets {
		if err := c.Conn.Write(ctx, websocket.MessageBinary, p); err != nil {
			return err
		}
	}
	return nil
}

// End sends {"type":"end"}.
func (c *Client) End(ctx context.Context) error {
	return c.Conn.Write(ctx, websocket.MessageText, []byte(`{"type":"end"}`))
}

// Drain reads messages until the server closes, calling each (if set) on
// each; it returns the close code (-1 when the connection failed without
// one).
func (c *Client) Drain(ctx context.Context, each func(Message) error) (websocket.StatusCode, error) {
	for {
		m, err := c.Next(ctx)
		if err != nil {
			return websocket.CloseStatus(err), nil
		}
		if each != nil {
			if err := each(m); err != nil {
				c.Conn.CloseNow()
				return -1, err
			}
		}
	}
}
