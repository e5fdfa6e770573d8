<?php
// A tiny pure-PHP STOMP 1.2 client, as a PHP program would write one: connect, send with
// receipt, subscribe with client-individual acks, ack, disconnect with receipt.
[$_, $host, $port] = $argv;
$s = stream_socket_client("tcp://$host:$port", $errno, $errstr, 10);
if (!$s) { fwrite(STDERR, "connect: $errstr\n"); exit(1); }
stream_set_timeout($s, 10);
$buf = '';
function frame($cmd, $headers = [], $body = '') {
    $out = "$cmd\n";
    foreach ($headers as $k => $v) {
        $out .= strtr($k, ["\\" => "\\\\", "\n" => "\\n", ":" => "\\c"]) . ':' . strtr($v, ["\\" => "\\\\", "\n" => "\\n", ":" => "\\c"]) . "\n";
    }
    if ($body !== '') $out .= 'content-length:' . strlen($body) . "\n";
    return $out . "\n" . $body . "\0";
}
function read_frame($s, &$buf) {
    while (true) {
        $buf = ltrim($buf, "\r\n");
        $end = strpos($buf, "\n\n");
        if ($end !== false) {
            $lines = explode("\n", substr($buf, 0, $end));
            $cmd = array_shift($lines);
            $h = [];
            foreach ($lines as $l) { [$k, $v] = explode(':', $l, 2); if (!isset($h[$k])) $h[$k] = strtr($v, ["\\c" => ":", "\\n" => "\n", "\\\\" => "\\"]); }
            $start = $end + 2;
            if (isset($h['content-length'])) {
                $n = (int)$h['content-length'];
                if (strlen($buf) >= $start + $n + 1) { $body = substr($buf, $start, $n); $buf = substr($buf, $start + $n + 1); return [$cmd, $h, $body]; }
            } else {
                $nul = strpos($buf, "\0", $start);
                if ($nul !== false) { $body = substr($buf, $start, $nul - $start); $buf = substr($buf, $nul + 1); return [$cmd, $h, $body]; }
            }
        }
        $data = fread($s, 65536);
        if ($data === false || $data === '') { fwrite(STDERR, "closed\n"); exit(1); }
        $buf .= $data;
    }
}
function expect($f, $cmd) { if ($f[0] !== $cmd) { fwrite(STDERR, "expected $cmd, got " . json_encode($f) . "\n"); exit(1); } }
fwrite($s, frame('CONNECT', ['accept-version' => '1.2', 'host' => 'localhost']));
expect(read_frame($s, $buf), 'CONNECTED');
fwrite($s, frame('SEND', ['destination' => '/queue/php', 'receipt' => 'r1', 'x-from' => 'php:1'], "hello\0from php"));
$r = read_frame($s, $buf); expect($r, 'RECEIPT');
fwrite($s, frame('SUBSCRIBE', ['destination' => '/queue/php', 'id' => '0', 'ack' => 'client-individual']));
$m = read_frame($s, $buf); expect($m, 'MESSAGE');
if ($m[2] !== "hello\0from php" || $m[1]['x-from'] !== 'php:1') { fwrite(STDERR, "bad message\n"); exit(1); }
fwrite($s, frame('ACK', ['id' => $m[1]['ack'], 'receipt' => 'r2']));
expect(read_frame($s, $buf), 'RECEIPT');
fwrite($s, frame('DISCONNECT', ['receipt' => 'bye']));
expect(read_frame($s, $buf), 'RECEIPT');
echo "ok\n";
