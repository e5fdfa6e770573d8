<?php
// The PECL stomp extension (Debian php-stomp) used as PHP programs use it.
[$_, $host, $port] = $argv;
$s = new Stomp("tcp://$host:$port");
$s->send('/queue/pecl', "hello from pecl", ['persistent' => 'true', 'correlation-id' => 'c-1', 'receipt' => 'r1']);
$s->subscribe('/queue/pecl', ['ack' => 'client-individual', 'activemq.prefetchSize' => '1']);
$f = $s->readFrame();
if (!$f || $f->body !== 'hello from pecl' || $f->headers['correlation-id'] !== 'c-1') {
    fwrite(STDERR, "bad frame: " . var_export($f, true) . "\n");
    exit(1);
}
$s->ack($f);
$s->begin('t1');
$s->send('/queue/pecl-tx', 'in tx', ['transaction' => 't1']);
$s->commit('t1');
$s->send('/queue/pecl-sync', 'sync', ['receipt' => 'sync']);  // frames are served in order: COMMIT is done
unset($s);
echo "ok\n";
