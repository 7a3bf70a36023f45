<?php
// Without composer: require __DIR__ . '/path/to/clients/php/src/autoload.php';
// (with composer, the PSR-4 autoload of composer.json does the same).
spl_autoload_register(static function (string $class): void {
    if (str_starts_with($class, 'Tempest\\')) {
        $file = __DIR__ . '/' . str_replace('\\', '/', substr($class, 8)) . '.php';
        if (is_file($file)) {
            require $file;
        }
    }
});
