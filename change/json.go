package change

import (
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// noEscape marks the ASCII bytes that appear in a JSON string as they are.
var noEscape = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// AppendJSONString appends s as a JSON string. Invalid UTF-8 becomes
// U+FFFD, as encoding/json does, so the output is always valid JSON even
// from a database in SQL_ASCII. The realtime encoder shares it.
func AppendJSONString(dst []byte, s string) []byte {
	return appendEscaped(dst, s, utf8.DecodeRuneInString)
}

// AppendJSONBytes is AppendJSONString for a value still in its wire buffer.
func AppendJSONBytes(dst []byte, s []byte) []byte {
	return appendEscaped(dst, s, utf8.DecodeRune)
}

func appendEscaped[T string | []byte](dst []byte, s T, decode func(T) (rune, int)) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if noEscape[c] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := decode(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
