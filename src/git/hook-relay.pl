#!/usr/bin/perl
# The hook relay of hook-relay.ts, for hosts with Perl (git's own packages depend on it): the
# same request, answer and failure rules, started in about a tenth of Node's CPU time. A push
# through a storage node runs it once per ref transaction (reference-transaction `prepared`), and
# every push runs it twice. installHooks() uses it when Perl can run it, the Node relay otherwise;
# src/git/hooks.test.ts runs both against the same server.
#
# It loads no module: JSON::PP, IO::Socket::UNIX and Cwd cost 19 ms of start-up per run (2 ms
# without them), paid by every hook call of every push, 36 times for a push of 36 refs. So the
# request's JSON is written here, the answer's three fields read here, the socket is opened with
# Perl's built-ins (Linux's AF_UNIX and SOCK_STREAM are 1), and the directory is
# /proc/self/cwd's target.
#
# argv: <hook name> <default socket path> [hook arguments...]
use strict;

my ($hook, $default_socket, @args) = @ARGV;
$hook = '' unless defined $hook;
$default_socket = '' unless defined $default_socket;
# In pre-receive the pushed objects are still in quarantine; the server needs these to see them.
my %quarantine = map { $_ => 1 } qw(GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES);
my $socket_path = $ENV{GITSTRATUM_HOOK_SOCKET} || $default_socket;
$SIG{PIPE} = 'IGNORE';

# A JSON string of bytes: UTF-8 where they are valid UTF-8, else each byte as its own character.
sub json_string {
  my ($raw) = @_;
  my $s = $raw;
  $s = $raw unless utf8::decode($s);
  utf8::encode($s);
  $s =~ s/(["\\])/\\$1/g;
  $s =~ s/([\x00-\x1f\x7f])/sprintf('\\u%04x', ord $1)/ge;
  return qq("$s");
}

# The value of a string field of the server's answer (JSON it wrote: escapes as JSON allows).
sub json_field_string {
  my ($json, $name) = @_;
  return undef unless $json =~ /"\Q$name\E"\s*:\s*"((?:[^"\\]|\\.)*)"/s;
  my $v = $1;
  # The answer was read as bytes: characters first, then the escapes (which may name any).
  utf8::decode($v);
  my %simple = ('"' => '"', '\\' => '\\', '/' => '/', b => "\b", f => "\f", n => "\n", r => "\r", t => "\t");
  $v =~ s{\\u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})}{chr(0x10000 + ((hex($1) - 0xD800) << 10) + (hex($2) - 0xDC00))}ge;
  $v =~ s{\\(?:u([0-9a-fA-F]{4})|(.))}{defined $1 ? chr(hex $1) : $simple{$2}}ges;
  return $v;
}

sub say_err {
  my ($m) = @_;
  utf8::encode($m) if utf8::is_utf8($m);
  print STDERR $m;
}

# No server answered: hooks fail closed, exactly as unanswered() in hook-relay.ts says why.
sub unanswered {
  if ($hook eq 'reference-transaction') {
    if ((defined $args[0] ? $args[0] : '') eq 'prepared' && $ENV{GITSTRATUM_SHARD_EPOCH}) {
      say_err("gitstratum: the storage node that received this push is gone; push not applied, retry it\n");
      exit 1;
    }
    exit 0;
  }
  if ($hook eq 'pre-receive') {
    say_err("gitstratum: the server cannot be reached to check this push; push refused (is gitstratum running?)\n");
    exit 1;
  }
  say_err("gitstratum: the server cannot be reached; $hook skipped (no audit entry or snapshot mark for this push)\n");
  exit 0;
}

binmode STDIN;
my $stdin = do { local $/; <STDIN> };
$stdin = '' unless defined $stdin;
my @env;
for my $k (sort keys %ENV) {
  push @env, json_string($k) . ':' . json_string($ENV{$k}) if $k =~ /^(?:GITSTRATUM_|GIT_PUSH_OPTION)/ || $quarantine{$k};
}
my $cwd = readlink('/proc/self/cwd');
unless (defined $cwd) {
  require Cwd;
  $cwd = Cwd::getcwd();
}
my $request = '{"hook":' . json_string($hook)
  . ',"args":[' . join(',', map { json_string($_) } @args) . ']'
  . ',"stdin":' . json_string($stdin)
  . ',"env":{' . join(',', @env) . '}'
  . ',"cwd":' . json_string(defined $cwd ? $cwd : '') . '}';

# AF_UNIX = PF_UNIX = 1 and SOCK_STREAM = 1 on Linux; sockaddr_un is the family, then the path.
socket(my $socket, 1, 1, 0) or unanswered();
connect($socket, pack('S Z*', 1, $socket_path)) or unanswered();
binmode $socket;
# Unbuffered, so the whole request is out before the shutdown below.
my $previous = select($socket);
$| = 1;
select($previous);
print {$socket} $request, "\n" or unanswered();
shutdown($socket, 1);
my $answer = do { local $/; <$socket> };
close $socket;
$answer = '' unless defined $answer;
unanswered() unless $answer =~ /^\s*\{/ && $answer =~ /"code"\s*:\s*(-?\d+)/;
my $code = $1;
my $message = json_field_string($answer, 'message');
if (defined $message && length $message) {
  say_err($message =~ /\n\z/ ? $message : "$message\n");
}
# The server could not record a committed transaction: git ignores this hook's status there, so
# the git process that ran it (its parent) is stopped before it reports the push as done.
kill 'KILL', getppid() if $answer =~ /"abort"\s*:\s*true/ && getppid() > 1;
exit $code;
